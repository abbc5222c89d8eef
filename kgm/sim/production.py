"""`kgm simulate --sharing mig`: a workload through the production code paths, with no Kubernetes.

Every pod goes through the webhook's core (which turns a GPU share into the smallest MIG instance
that covers it), the extender's filter, prioritize and bind (the in-memory binder), and the
reconciler into a ledger (SQLite in memory), on a cache filled from a cluster description: exactly
what `kgm serve --inventory FILE` runs. The summary says how much GPU each policy left stranded,
how many pods found no room, and what the placed pods cost.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jsonpatch
from prometheus_client import CollectorRegistry

from extender.bind import InMemoryBinder
from extender.gpu_extender import GpuExtender
from inventory.domain.allocation import AllocationFilter
from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    MEMORY_GB,
    MIG_RESOURCE_PREFIX,
    PLACEMENT_POLICY,
    WORKLOAD_TYPE,
)
from inventory.domain.model import ClusterInventory, NodeName
from inventory.domain.offer import offer_of
from inventory.domain.shape import NodeShape
from inventory.ledger.metrics import ReconcileMetrics
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger
from inventory.live.static import cache_of
from kgm.sim.trace import TracePod
from webhook.mutation import Admit, mutate_pod
from webhook.settings import WebhookSettings

POLICIES = ("fragmentation", "binpack", "spread", "cost")
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class MigRun:
    """One policy, one seed: the curve and the counts."""

    policy: str
    seed: int
    #: arrived workload % -> unallocated GPU % (whole GPUs count 1, a MIG instance its compute share)
    unallocated_pct: dict[int, float] = field(default_factory=dict)
    arrived: int = 0
    placed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    cost_per_hour: Decimal = Decimal(0)
    cost_total: Decimal = Decimal(0)
    mig_pods: int = 0
    #: At the end: idle capacity in whole GPUs and in MIG instances, % of the cluster's GPUs.
    idle_whole_pct: float = 0.0
    idle_mig_pct: float = 0.0


def inflate(
    pods: Sequence[TracePod], capacity_gpus: float, *, seed: int, target: float = 1.3
) -> list[TracePod]:
    """The FGD paper's workload: the GPU pods shuffled, taken in that order (then resampled ones)
    until the GPU requested reaches ``target`` x the cluster's capacity (arrivals only)."""
    rng = random.Random(seed)
    gpu_pods = [p for p in pods if p.num_gpu > 0]
    shuffled = list(gpu_pods)
    rng.shuffle(shuffled)
    order: list[TracePod] = []
    total = 0.0
    while total < target * capacity_gpus and gpu_pods:
        pod = shuffled[len(order)] if len(order) < len(shuffled) else rng.choice(gpu_pods)
        order.append(pod)
        total += _gpus(pod)
    return order


def run_mig(
    cluster: ClusterInventory,
    pods: Sequence[TracePod],
    *,
    policy: str,
    seed: int,
    memory_per_gpu_gb: int = 80,
) -> MigRun:
    cache = cache_of(cluster)
    offer = offer_of(cluster)
    ledger = SqlLedger.open("sqlite:///:memory:")
    clock = _SimClock()
    reconciler = Reconciler(
        ledger=ledger,
        shape_of=lambda node: _shape(cache, node),
        prices=cluster.prices,
        clock=clock,
        observe_write=ReconcileMetrics.register(CollectorRegistry()).write_seconds.observe,
    )
    extender = GpuExtender(
        cache=cache,
        binder=InMemoryBinder(cache, on_bound=lambda pod: reconciler.on_pod("ADDED", pod)),
        prices=cluster.prices,
    )
    names = [node.name for node in cluster.nodes]
    capacity = sum(len(node.gpus) for node in cluster.nodes)
    rng = random.Random(seed)
    run = MigRun(policy=policy, seed=seed)
    requested = 0.0
    next_mark = 0
    for index, trace_pod in enumerate(inflate(pods, capacity, seed=seed)):
        clock.tick()
        requested += _gpus(trace_pod)
        # The state at x% arrived is the one after every pod whose arrival keeps the total within x%.
        while next_mark <= 130 and next_mark < 100 * requested / capacity:
            run.unallocated_pct[next_mark] = _unallocated_pct(cache, names, capacity)
            next_mark += 1
        pod = _pod(trace_pod, index, policy=policy, memory_per_gpu_gb=memory_per_gpu_gb)
        decision = mutate_pod(pod, namespace="sim", offer=offer, settings=WebhookSettings())
        run.arrived += 1
        if not isinstance(decision, Admit):
            run.refused[f"admission: {decision.message}"] += 1
            continue
        admitted = jsonpatch.apply_patch(copy.deepcopy(pod), decision.patch)
        if any(
            r.startswith(MIG_RESOURCE_PREFIX)
            for c in admitted["spec"]["containers"]
            for r in c["resources"]["limits"]
        ):
            run.mig_pods += 1
        outcome = extender.filter(admitted, names)
        if not outcome.passed:
            run.refused["no node had room"] += 1
        else:
            scores = extender.prioritize(admitted, outcome.passed)
            best = max(scores.values())
            node = rng.choice([name for name, score in scores.items() if score == best])
            meta = admitted["metadata"]
            error = extender.bind(namespace="sim", name=meta["name"], uid=meta["uid"], node=node)
            if error is None:
                run.placed += 1
            else:
                run.refused[f"bind: {error}"] += 1
    while next_mark <= 130:
        run.unallocated_pct[next_mark] = _unallocated_pct(cache, names, capacity)
        next_mark += 1
    run.idle_whole_pct, run.idle_mig_pct = _idle_split(cache, names, capacity)
    active = ledger.find(AllocationFilter(), limit=100_000).items
    run.cost_per_hour = sum((a.hourly_price * a.count for a in active), Decimal(0))
    run.cost_total = sum((a.cost(clock()) for a in active), Decimal(0))
    ledger.close()
    return run


def _unallocated_pct(cache: Any, names: Sequence[str], capacity: int) -> float:
    snapshot = cache.snapshot()
    allocated = 0.0
    for name in names:
        shape: NodeShape = snapshot.states[NodeName(name)].shape
        allocated += shape.full_gpus_total - shape.full_gpus_free
        shares = {resource: share for resource, _, share in shape.resources}
        for (resource, total), (_, free) in zip(shape.mig_total, shape.mig_free, strict=True):
            allocated += (total - free) * shares.get(resource, 0.0)
    return 100.0 - 100.0 * allocated / capacity


def _idle_split(cache: Any, names: Sequence[str], capacity: int) -> tuple[float, float]:
    """Where the unallocated capacity is: free whole GPUs, and free MIG instances (a GPU's share each)."""
    snapshot = cache.snapshot()
    whole = mig = 0.0
    for name in names:
        shape: NodeShape = snapshot.states[NodeName(name)].shape
        whole += shape.full_gpus_free
        shares = {resource: share for resource, _, share in shape.resources}
        mig += sum(free * shares.get(resource, 0.0) for resource, free in shape.mig_free)
    return 100 * whole / capacity, 100 * mig / capacity


def _pod(trace_pod: TracePod, index: int, *, policy: str, memory_per_gpu_gb: int) -> dict[str, Any]:
    """A pod as an ML team would write it: whole GPUs, plus the memory a GPU share stands for."""
    annotations = {PLACEMENT_POLICY: policy}
    if trace_pod.num_gpu == 1 and trace_pod.gpu_milli < 1000:
        annotations[MEMORY_GB] = str(
            max(1, math.ceil(trace_pod.gpu_milli / 1000 * memory_per_gpu_gb))
        )
        annotations[WORKLOAD_TYPE] = "Inference"
    else:
        annotations[WORKLOAD_TYPE] = "Training"
    limits = {FULL_GPU_RESOURCE: str(trace_pod.num_gpu)}
    return {
        "metadata": {
            "name": f"{trace_pod.name}-{index}",
            "namespace": "sim",
            "uid": f"sim-{index}",
            "annotations": annotations,
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "trace",
                    "resources": {"limits": dict(limits), "requests": dict(limits)},
                }
            ]
        },
    }


def _gpus(pod: TracePod) -> float:
    return pod.num_gpu * pod.gpu_milli / 1000


def _shape(cache: Any, node: str) -> NodeShape | None:
    state = cache.snapshot().states.get(NodeName(node))
    return state.shape if state else None


class _SimClock:
    """Simulated time: a minute per arrival, so cost figures have hours to count."""

    def __init__(self) -> None:
        self.now = START

    def tick(self) -> None:
        self.now += timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now


def summary(runs: Sequence[MigRun]) -> str:
    """The table `kgm simulate` prints: medians over seeds per policy."""
    lines = [
        f"{'policy':<14}{'arrived':>8}{'placed':>8}{'refused':>8}{'MIG pods':>9}"
        f"{'unalloc@100%':>13}{'unalloc@130%':>13}{'idle whole':>11}{'idle MIG':>9}{'cost/h':>9}",
    ]
    for policy in dict.fromkeys(run.policy for run in runs):
        mine = [run for run in runs if run.policy == policy]
        arrived = statistics.median(r.arrived for r in mine)
        placed = statistics.median(r.placed for r in mine)
        refused = statistics.median(sum(r.refused.values()) for r in mine)
        mig = statistics.median(r.mig_pods for r in mine)
        at_100 = statistics.median(r.unallocated_pct[100] for r in mine)
        at_130 = statistics.median(r.unallocated_pct[130] for r in mine)
        cost = statistics.median(float(r.cost_per_hour) for r in mine)
        whole = statistics.median(r.idle_whole_pct for r in mine)
        idle_mig = statistics.median(r.idle_mig_pct for r in mine)
        lines.append(
            f"{policy:<14}{arrived:>8.0f}{placed:>8.0f}{refused:>8.0f}{mig:>9.0f}{at_100:>12.2f}%{at_130:>12.2f}%"
            f"{whole:>10.1f}%{idle_mig:>8.1f}%{cost:>9.2f}"
        )
    return "\n".join([*lines, *_LEGEND])


_LEGEND = (
    "unalloc: GPU capacity not allocated as the workload arrives, % of all GPUs (a MIG instance",
    "  counts its share of compute slices); idle whole / idle MIG: where it sits at the end, the rest",
    "  being compute slices no instance covers (2 x 3g.40gb leaves 1 of 7). MIG instances that no",
    "  request fits stay idle whatever the policy: a layout matching the workload matters more there.",
)
