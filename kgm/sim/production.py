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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jsonpatch
from prometheus_client import CollectorRegistry

from extender.bind import InMemoryBinder
from extender.gpu_extender import GpuExtender
from inventory.domain.allocation import AllocationFilter
from inventory.domain.demand import demand_of
from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    MEMORY_GB,
    MIG_RESOURCE_PREFIX,
    PLACEMENT_POLICY,
    WORKLOAD_TYPE,
)
from inventory.domain.mig_candidates import describe, plannable_offer
from inventory.domain.mig_plan import PlanSettings
from inventory.domain.model import ClusterInventory, NodeName
from inventory.domain.offer import offer_of
from inventory.domain.shape import NodeShape
from inventory.ledger.metrics import ReconcileMetrics
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from kgm.sim.mig_layouts import SimLayouts, node_object
from kgm.sim.quotas import SimQuotas
from kgm.sim.trace import TracePod
from webhook.mutation import Admit, mutate_pod
from webhook.settings import WebhookSettings

POLICIES = ("fragmentation", "binpack", "spread", "cost")
PLANNER_MODES = ("off", "apply")
START = datetime(2026, 1, 1, tzinfo=UTC)
#: The planner in the simulation: a round after every arrival (a simulated minute), one node at a time.
SIM_PLAN = PlanSettings()
#: How long a pod waits for a layout the planner is making before it counts as refused.
MAX_WAIT_S = 600.0


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
    #: ``off``: the layouts of the cluster file throughout; ``apply``: the MIG planner changes them.
    planner: str = "off"
    #: GPUs whose layout the planner changed, and GPUs with MIG on at the end.
    layout_changes: int = 0
    mig_gpus: int = 0
    #: How many GPUs end with each layout (``MIG off``, ``2 x 3g.40gb``, ...).
    final_layouts: dict[str, int] = field(default_factory=dict)
    #: The planner's reason for each change, in order.
    change_reasons: list[str] = field(default_factory=list)
    #: Pods refused at admission by a team quota of the cluster file, by quota and unit.
    refused_by_quota: Counter[str] = field(default_factory=Counter)


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
    planner: str = "off",
    reconfigure_s: float = 60.0,
    plan_settings: PlanSettings = SIM_PLAN,
    allocatable: Mapping[str, tuple[int, int]] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> MigRun:
    """One run. With ``planner="apply"`` admission offers the profiles the planner may create, a
    pod no node has room for waits (up to ``MAX_WAIT_S``) while the planner, after each arrival,
    changes layouts; a changed GPU offers nothing new for ``reconfigure_s`` simulated seconds.
    ``allocatable``: per node (CPU milli, memory MiB), published as its Node object would; pods
    request the trace's CPU and memory, so the placement policy sees what they leave. ``on_step(pct)``
    is called as each percent of arrived workload (0..130) is recorded."""
    allocatable = dict(allocatable or {})
    cache = _cache(cluster, allocatable)
    layouts = None
    if planner == "apply":
        layouts = SimLayouts(
            cluster,
            cache,
            settings=plan_settings,
            reconfigure_s=reconfigure_s,
            heartbeat=START,
            allocatable=allocatable,
        )
    offer = plannable_offer(cluster) if layouts else offer_of(cluster)
    ledger = SqlLedger.open("sqlite:///:memory:")
    clock = _SimClock()
    run = MigRun(policy=policy, seed=seed, planner=planner)
    quotas = SimQuotas(cluster, cache, offer, seed=seed, run=run)
    extender = _extender(cluster, cache, ledger, clock, layouts, also_bound=quotas.bound)
    names = [node.name for node in cluster.nodes]
    capacity = sum(len(node.gpus) for node in cluster.nodes)
    scheduler = _Scheduler(
        extender, names, random.Random(seed), run, wait=layouts is not None, on_refused=quotas.forget
    )
    requested = 0.0
    next_mark = 0
    for index, trace_pod in enumerate(inflate(pods, capacity, seed=seed)):
        clock.tick()
        now_s = (clock() - START).total_seconds()
        if layouts is not None:
            layouts.finish(now_s)
            scheduler.retry(now_s)
        requested += _gpus(trace_pod)
        # The state at x% arrived is the one after every pod whose arrival keeps the total within x%.
        while next_mark <= 130 and next_mark < 100 * requested / capacity:
            run.unallocated_pct[next_mark] = _unallocated_pct(cache, names, capacity)
            if on_step is not None:
                on_step(next_mark)
            next_mark += 1
        pod = quotas.team_of(_pod(trace_pod, index, policy=policy, memory_per_gpu_gb=memory_per_gpu_gb))
        mutated = mutate_pod(pod, namespace="sim", offer=offer, settings=WebhookSettings())
        decision = quotas.judge(pod, mutated)
        run.arrived += 1
        if not isinstance(decision, Admit):
            # a quota's message carries the figures of the moment: counted by quota in refused_by_quota
            run.refused[f"admission: {decision.message}" if decision is mutated else _OVER_QUOTA] += 1
            continue
        admitted = jsonpatch.apply_patch(copy.deepcopy(pod), decision.patch)
        resources = demand_of(admitted).resources
        if any(r.startswith(MIG_RESOURCE_PREFIX) for r in resources):
            run.mig_pods += 1
        scheduler.schedule(admitted, resources, now_s)
        if layouts is not None:
            layouts.requested(resources)
            layouts.plan(now_s, scheduler.wanted())
    while next_mark <= 130:
        run.unallocated_pct[next_mark] = _unallocated_pct(cache, names, capacity)
        next_mark += 1
    scheduler.give_up()
    run.idle_whole_pct, run.idle_mig_pct = _idle_split(cache, names, capacity)
    _record_layouts(run, cluster, layouts)
    _record_cost(run, ledger, clock)
    return run


def _record_cost(run: MigRun, ledger: SqlLedger, clock: _SimClock) -> None:
    """What the placed pods cost, from the ledger the reconciler wrote (closed after)."""
    active = ledger.find(AllocationFilter(), limit=100_000).items
    run.cost_per_hour = sum((a.hourly_price * a.count for a in active), Decimal(0))
    run.cost_total = sum((a.cost(clock()) for a in active), Decimal(0))
    ledger.close()


_NO_ROOM = "no node had room"
_OVER_QUOTA = "admission: over a team quota of the cluster file"


def _cache(cluster: ClusterInventory, allocatable: Mapping[str, tuple[int, int]]) -> InventoryCache:
    """The cluster's cache, with the Node objects of the nodes whose CPU and memory are known."""
    cache = cache_of(cluster)
    for name in allocatable:
        cache.apply_node("ADDED", node_object(name, allocatable, {}))
    return cache


def _record_layouts(run: MigRun, cluster: ClusterInventory, layouts: SimLayouts | None) -> None:
    """The layouts at the end of the run, and what the planner changed to get there."""
    if layouts is not None:
        run.layout_changes = layouts.changes
        run.change_reasons = list(layouts.reasons)
        run.final_layouts = layouts.layouts()
        run.mig_gpus = layouts.mig_gpus()
        return
    gpus = [g for n in cluster.nodes for g in n.gpus]
    found = Counter(describe(tuple(g.mig_instances) if g.mig_enabled else None) for g in gpus)
    run.final_layouts = dict(found.most_common())
    run.mig_gpus = sum(g.mig_enabled for g in gpus)


def _extender(
    cluster: ClusterInventory,
    cache: InventoryCache,
    ledger: SqlLedger,
    clock: _SimClock,
    layouts: SimLayouts | None,
    also_bound: Callable[[Mapping[str, Any]], None] = lambda pod: None,
) -> GpuExtender:
    """The extender, binding in memory; each bind goes to the reconciler (and to the layouts,
    which remember the instance the simulated device plugin gave the pod)."""
    reconciler = Reconciler(
        ledger=ledger,
        shape_of=lambda node: _shape(cache, node),
        prices=cluster.prices,
        clock=clock,
        observe_write=ReconcileMetrics.register(CollectorRegistry()).write_seconds.observe,
    )

    def on_bound(pod: Mapping[str, Any]) -> None:
        if layouts is not None:
            layouts.bound(pod["spec"]["nodeName"], demand_of(pod).resources)
        reconciler.on_pod("ADDED", pod)
        also_bound(pod)

    return GpuExtender(cache=cache, binder=InMemoryBinder(cache, on_bound=on_bound), prices=cluster.prices)


class _Scheduler:
    """kube-scheduler's part: filter, prioritize and bind through the extender. With ``wait``, a
    pod no node has room for stays pending (up to ``MAX_WAIT_S``) and is tried again each minute,
    while the planner makes its layout; without, it is refused at once (the FGD protocol)."""

    def __init__(
        self,
        extender: GpuExtender,
        names: Sequence[str],
        rng: random.Random,
        run: MigRun,
        *,
        wait: bool,
        on_refused: Callable[[Mapping[str, Any]], None] = lambda pod: None,
    ) -> None:
        self._on_refused = on_refused
        self._extender = extender
        self._names = names
        self._rng = rng
        self._run = run
        self._wait = wait
        #: (pod as admitted, its GPU resources, simulated second it arrived at)
        self._waiting: list[tuple[dict[str, Any], Mapping[str, int], float]] = []

    def schedule(self, pod: dict[str, Any], resources: Mapping[str, int], now_s: float) -> None:
        error = self._place(pod)
        if error is None:
            self._run.placed += 1
        elif self._wait and error == _NO_ROOM:
            self._waiting.append((pod, resources, now_s))
        else:
            self._run.refused[error] += 1
            self._on_refused(pod)

    def retry(self, now_s: float) -> None:
        """The waiting pods, tried again in arrival order."""
        still = []
        for entry in self._waiting:
            pod, _, since = entry
            error = self._place(pod)
            if error is None:
                self._run.placed += 1
            elif error != _NO_ROOM:
                self._run.refused[error] += 1
                self._on_refused(pod)
            elif now_s - since >= MAX_WAIT_S:
                self._run.refused[f"{_NO_ROOM} (waited {MAX_WAIT_S:.0f} s for a layout)"] += 1
                self._on_refused(pod)
            else:
                still.append(entry)
        self._waiting = still

    def wanted(self) -> Counter[str]:
        """What the waiting pods need: the demand the planner serves first."""
        wanted = Counter[str]()
        for _, resources, _ in self._waiting:
            wanted.update(resources)
        return wanted

    def give_up(self) -> None:
        for _ in self._waiting:
            self._run.refused[f"{_NO_ROOM} (still waiting for a layout at the end)"] += 1
        self._waiting = []

    def _place(self, pod: dict[str, Any]) -> str | None:
        """None when bound, else why not."""
        outcome = self._extender.filter(pod, self._names)
        if not outcome.passed:
            return _NO_ROOM
        scores = self._extender.prioritize(pod, outcome.passed)
        best = max(scores.values())
        node = self._rng.choice([name for name, score in scores.items() if score == best])
        meta = pod["metadata"]
        error = self._extender.bind(namespace="sim", name=meta["name"], uid=meta["uid"], node=node)
        return None if error is None else f"bind: {error}"


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
        annotations[MEMORY_GB] = str(max(1, math.ceil(trace_pod.gpu_milli / 1000 * memory_per_gpu_gb)))
        annotations[WORKLOAD_TYPE] = "Inference"
    else:
        annotations[WORKLOAD_TYPE] = "Training"
    limits = {FULL_GPU_RESOURCE: str(trace_pod.num_gpu)}
    requests = {**limits, "cpu": f"{trace_pod.cpu_milli}m", "memory": f"{trace_pod.memory_mib}Mi"}
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
                    "resources": {"limits": dict(limits), "requests": requests},
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
    """The table `kgm simulate` prints: medians over seeds per policy, the static layouts of the
    cluster file and, where the planner ran, the planned ones on the next row."""
    lines = [
        f"{'policy':<14}{'layouts':<9}{'arrived':>8}{'placed':>8}{'refused':>8}{'MIG pods':>9}{'changes':>8}"
        f"{'unalloc@100%':>13}{'unalloc@130%':>13}{'idle whole':>11}{'idle MIG':>9}{'cost/h':>9}",
    ]
    compared = []
    for policy in dict.fromkeys(run.policy for run in runs):
        at_100 = {}
        for planner, label in (("off", "static"), ("apply", "planned")):
            mine = [run for run in runs if run.policy == policy and run.planner == planner]
            if not mine:
                continue
            at_100[label] = statistics.median(r.unallocated_pct[100] for r in mine)
            lines.append(f"{policy:<14}{label:<9}" + _row(mine))
        if len(at_100) == 2:
            compared.append(f"{policy} {at_100['static']:.2f}% -> {at_100['planned']:.2f}%")
    if compared:
        lines.append("unallocated at 100% arrived, static -> planned layouts: " + "; ".join(compared))
    lines += _quota_lines(runs)
    return "\n".join([*lines, *_LEGEND])


def _quota_lines(runs: Sequence[MigRun]) -> list[str]:
    """Pods refused by each team quota of the cluster file (median over seeds), per policy and layouts."""
    if not any(run.refused_by_quota for run in runs):
        return []
    lines = ["refused by quota (pods, median over seeds):"]
    for (policy, planner), mine in _groups(runs).items():
        keys = sorted({key for run in mine for key in run.refused_by_quota})
        counts = ", ".join(
            f"{key} {statistics.median(r.refused_by_quota[key] for r in mine):.0f}" for key in keys
        )
        lines.append(f"  {policy:<14}{'planned' if planner == 'apply' else 'static':<9}{counts or 'none'}")
    return lines


def _groups(runs: Sequence[MigRun]) -> dict[tuple[str, str], list[MigRun]]:
    found: dict[tuple[str, str], list[MigRun]] = {}
    for run in runs:
        found.setdefault((run.policy, run.planner), []).append(run)
    return found


def _row(runs: Sequence[MigRun]) -> str:
    def median(values: Iterable[float]) -> float:
        return statistics.median(values)

    return (
        f"{median(r.arrived for r in runs):>8.0f}{median(r.placed for r in runs):>8.0f}"
        f"{median(sum(r.refused.values()) for r in runs):>8.0f}{median(r.mig_pods for r in runs):>9.0f}"
        f"{median(r.layout_changes for r in runs):>8.0f}"
        f"{median(r.unallocated_pct[100] for r in runs):>12.2f}%"
        f"{median(r.unallocated_pct[130] for r in runs):>12.2f}%"
        f"{median(r.idle_whole_pct for r in runs):>10.1f}%{median(r.idle_mig_pct for r in runs):>8.1f}%"
        f"{median(float(r.cost_per_hour) for r in runs):>9.2f}"
    )


_LEGEND = (
    "unalloc: GPU capacity not allocated as the workload arrives, % of all GPUs (a MIG instance",
    "  counts its share of compute slices); idle whole / idle MIG: where it sits at the end, the rest",
    "  being compute slices no instance covers (2 x 3g.40gb leaves 1 of 7). MIG instances that no",
    "  request fits stay idle whatever the policy: a layout matching the workload matters more there.",
    "layouts: static, as the cluster file carves the GPUs; planned, as the MIG planner changes them",
    "  (changes: GPUs re-laid out; a pod no node has room for waits up to 10 minutes for its layout).",
)
