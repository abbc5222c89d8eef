"""The FGD paper's evaluation protocol (Weng et al., ATC'23, Sec. 6) and its metrics.

``run_protocol``: the trace's pods are shuffled with the seed; pods resampled with replacement (same RNG)
are appended until the total GPU request reaches ``inflation`` x the cluster's GPU capacity; pods arrive
one by one and never depart; a pod no node can take is dropped. After each step of arrived workload
(cumulative GPU request of the pods arrived so far / GPU capacity, in ``step_pct`` % steps from 0 to
``inflation`` x 100) the curve records the unallocated GPU % (100 - allocated / capacity x 100) and the
GPU fragmentation % (sum over nodes of the node's fragmentation for the typical workload / capacity x 100).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kgm.sim.cluster import make_cluster
from kgm.sim.policies import POLICY_CLASSES, POLICY_NAMES
from kgm.sim.trace import TraceNode, TracePod
from kgm.sim.workload import PodDemand

__all__ = ["POLICIES", "Curve", "build_workload", "run_protocol"]

POLICIES: tuple[str, ...] = POLICY_NAMES


@dataclass(frozen=True, slots=True)
class Curve:
    """One run: metrics at each arrived-workload percent (``arrived_pct[k]``)."""

    policy: str
    seed: int
    arrived_pct: tuple[int, ...]
    unallocated_gpu_pct: tuple[float, ...]
    fragmentation_pct: tuple[float, ...]
    pods_arrived: int
    pods_placed: int
    pods_failed: int
    elapsed_s: float

    def at(self, pct: int) -> tuple[float, float]:
        """(unallocated %, fragmentation %) at ``pct`` % arrived."""
        k = self.arrived_pct.index(pct)
        return self.unallocated_gpu_pct[k], self.fragmentation_pct[k]


def build_workload(
    nodes: Sequence[TraceNode], pods: Sequence[TracePod], rng: random.Random, inflation: float
) -> list[TracePod]:
    """Shuffled trace, then resampled pods appended until the GPU request reaches ``inflation`` x capacity."""
    if not pods:
        raise ValueError("no pods")
    capacity = sum(n.gpu for n in nodes) * 1000
    workload = list(pods)
    rng.shuffle(workload)
    target = inflation * capacity
    request = sum(p.gpu_request_milli for p in workload)
    if request <= 0 < target and all(p.gpu_request_milli == 0 for p in pods):
        raise ValueError("the pods request no GPU: cannot inflate the workload to a GPU target")
    while request < target:
        p = rng.choice(pods)
        workload.append(p)
        request += p.gpu_request_milli
    return workload


def run_protocol(
    nodes: Sequence[TraceNode],
    pods: Sequence[TracePod],
    *,
    policy: str,
    seed: int,
    inflation: float = 1.3,
    step_pct: int = 1,
    on_step: Callable[[int], None] | None = None,
) -> Curve:
    """Run one policy with one seed; see the module docstring. ``on_step(pct)`` is called per step."""
    if policy not in POLICY_CLASSES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    if step_pct <= 0:
        raise ValueError("step_pct must be positive")
    started = time.perf_counter()
    rng = random.Random(seed)
    cluster = make_cluster(nodes, pods, policy)
    capacity = cluster.total_gpu_milli
    if capacity <= 0:
        raise ValueError("the cluster has no GPU")
    workload = build_workload(nodes, pods, rng, inflation)
    # the simulator draws the node order that breaks ties (rand.Perm in syncClusterResourceList) after
    # TunePodsByNodeTotalResource has built the workload, from the same seeded generator
    cluster.set_tie_order(rng)
    last_pct = round(inflation * 100)
    steps = list(range(0, last_pct + 1, step_pct))
    unalloc: list[float] = []
    frag: list[float] = []

    def record() -> None:
        unalloc.append(100.0 * cluster.idle_gpu_milli / capacity)
        frag.append(100.0 * cluster.frag_total / capacity)
        if on_step is not None:
            on_step(steps[len(unalloc) - 1])

    demands: dict[TracePod, PodDemand] = {}
    cum = 0
    placed = failed = 0
    for pod in workload:
        cum += pod.gpu_request_milli
        # record every step that this pod's arrival would push past
        while len(unalloc) < len(steps) and cum * 100 > steps[len(unalloc)] * capacity:
            record()
        d = demands.get(pod)
        if d is None:
            d = demands[pod] = PodDemand.of(pod)
        if cluster.try_place(d, rng) is None:
            failed += 1
        else:
            placed += 1
    while len(unalloc) < len(steps):
        record()
    return Curve(
        policy=policy,
        seed=seed,
        arrived_pct=tuple(steps),
        unallocated_gpu_pct=tuple(unalloc),
        fragmentation_pct=tuple(frag),
        pods_arrived=len(workload),
        pods_placed=placed,
        pods_failed=failed,
        elapsed_s=time.perf_counter() - started,
    )
