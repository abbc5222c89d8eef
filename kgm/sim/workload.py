"""The typical workload: the task types that a fractional-GPU placement expects, and what a pod demands.

Semantics follow hkust-adsl/kubernetes-scheduler-simulator (the simulator behind the FGD paper,
Weng et al., USENIX ATC'23): a node has ``cpu_milli``, ``memory_mib`` and N GPUs of ``MILLI`` (1000)
milli-GPU each. A sharing pod (``num_gpu == 1``, ``gpu_milli < 1000``) takes ``gpu_milli`` from ONE GPU; a
whole-GPU pod takes ``num_gpu`` fully free GPUs of one node; CPU-only pods take CPU and memory only.
``gpu_spec`` restricts the node's GPU model (``utils.IsNodeAccessibleToPodByType``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from inventory.domain.fragmentation import TaskType
from kgm.sim.trace import MILLI, TracePod

__all__ = [
    "POPULARITY_STEP",
    "POPULARITY_THRESHOLD_PCT",
    "PodDemand",
    "TypicalPod",
    "TypicalWorkload",
    "typical_workload",
]

POPULARITY_THRESHOLD_PCT = 95  # typicalPodsConfig.podPopularityThreshold in the paper's experiments
POPULARITY_STEP = 1  # podIncreaseStep in the paper's experiment scripts


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What placement needs from a pod (the trace pod without its name and times)."""

    cpu: int
    mem: int
    num_gpu: int
    gpu_milli: int
    spec: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pod: TracePod) -> PodDemand:
        return cls(pod.cpu_milli, pod.memory_mib, pod.num_gpu, pod.gpu_milli, pod.gpu_spec)

    @property
    def total_gpu(self) -> int:
        return self.num_gpu * self.gpu_milli

    @property
    def is_share(self) -> bool:
        return self.num_gpu == 1 and 0 < self.gpu_milli < MILLI

    @property
    def affinity(self) -> str:
        """The GPU-clustering tag (``GetGpuAffinityFromPodAnnotation``)."""
        if self.num_gpu == 0 or self.gpu_milli == 0:
            return "no-gpu"
        return "share-gpu" if self.is_share else f"{self.num_gpu}-gpu"


@dataclass(frozen=True, slots=True)
class TypicalPod:
    cpu: int
    num_gpu: int
    gpu_milli: int
    spec: frozenset[str]
    weight: float  # popularity, the weights of a workload sum to 1
    mem: int = 0  # MiB; always 0 in the source's PodResource (pkg/type/resource.go has no memory field)


@dataclass(frozen=True, slots=True)
class TypicalWorkload:
    pods: tuple[TypicalPod, ...]

    def for_model(self, model: str) -> tuple[float, tuple[TaskType, ...]]:
        """(weight of the tasks that cannot use this model, the others as the placement policy's task
        types: ``num_gpu`` GPUs with ``gpu_milli`` idle each)."""
        no_access = 0.0
        usable: list[TaskType] = []
        for t in self.pods:
            # a CPU-only task leaves all idle GPU unused (XL/XR in the source: counted as fragment)
            if t.num_gpu == 0 or (t.spec and (not model or model not in t.spec)):
                no_access += t.weight
            else:
                usable.append(TaskType(t.weight, t.cpu, t.mem, t.num_gpu, t.gpu_milli))
        return no_access, tuple(usable)


def typical_workload(
    pods: Iterable[TracePod],
    *,
    threshold_pct: float = POPULARITY_THRESHOLD_PCT,
    step: int = POPULARITY_STEP,
    include_cpu_pods: bool = True,
    with_memory: bool = False,
) -> TypicalWorkload:
    """The target workload as ``utils.GetTypicalPods`` builds it.

    Pods are grouped by (cpu, gpu_milli, num_gpu, gpu_spec) and sorted by count (ties: the larger
    resource first); task types are taken ``step`` at a time until they cover ``threshold_pct`` % of
    the pods, and their popularities are renormalised to sum to 1. The paper's runs
    (``scripts/generate_config_and_run.py``) use threshold 95, step 1 and ``isInvolvedCpuPods: true``.
    ``with_memory`` (not in the source, whose ``PodResource`` has no memory): memory is part of a type
    and a type needs its memory on the node (used by ``kgm``).
    """
    counts: Counter[tuple[int, int, int, str, int]] = Counter()
    for p in pods:
        if (p.num_gpu == 0 or p.gpu_milli == 0) and not include_cpu_pods:
            continue
        counts[
            (
                p.cpu_milli,
                p.gpu_milli if p.num_gpu else 0,
                p.num_gpu if p.gpu_milli else 0,
                "|".join(sorted(p.gpu_spec)),
                p.memory_mib if with_memory else 0,
            )
        ] += 1
    total = sum(counts.values())
    if total == 0:
        return TypicalWorkload(())
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], *kv[0]), reverse=True)
    expected = threshold_pct * total / 100.0
    taken = 0
    cum = 0
    while cum < expected and taken < len(ranked):
        upto = min(taken + step, len(ranked))
        cum += sum(c for _, c in ranked[taken:upto])
        taken = upto
    chosen = ranked[:taken]
    norm = sum(c for _, c in chosen)
    return TypicalWorkload(
        tuple(
            TypicalPod(cpu, num, milli, frozenset(s for s in spec.split("|") if s), c / norm, mem)
            for (cpu, milli, num, spec, mem), c in chosen
        )
    )
