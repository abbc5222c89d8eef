"""Cluster model for fractional-GPU placement, the fragmentation measure and the placement policies.

Semantics follow hkust-adsl/kubernetes-scheduler-simulator (the simulator behind the FGD paper,
Weng et al., USENIX ATC'23):

* A node has ``cpu_milli``, ``memory_mib`` and N GPUs of ``MILLI`` (1000) milli-GPU each. A sharing pod
  (``num_gpu == 1``, ``gpu_milli < 1000``) takes ``gpu_milli`` from ONE GPU; a whole-GPU pod takes
  ``num_gpu`` fully free GPUs of one node; CPU-only pods take CPU and memory only. ``gpu_spec``
  restricts the node's GPU model (``utils.IsNodeAccessibleToPodByType``).
* Fragmentation (``utils.NodeGpuShareFragAmountScore``): for a typical task m, if the node can host m
  (model, CPU and enough GPUs with ``gpu_milli`` left) the fragment is the idle milli on GPUs with less
  than m's per-GPU demand left, otherwise ALL idle GPU milli. The node's fragmentation is the
  popularity-weighted sum over the typical tasks. As in the source, memory does not enter it.
* Scores are computed exactly as the source's score plugins compute them, INCLUDING their integer
  truncation to 0..100 (``int64(...)``); the best score wins. Ties do NOT go to a random node: the
  simulator vendors a patched kube-scheduler whose ``selectHost``
  (vendor/k8s.io/kubernetes/pkg/scheduler/core/generic_scheduler.go) keeps "the smallest lexicographical
  order if the score remains the same", and ``Simulator.syncClusterResourceList``
  (pkg/simulator/simulator.go) renames node i to ``fmt.Sprintf("%04d-", rand.Perm(n)[i]) + name`` after the
  workload has been tuned. So a tie goes to the node of smallest rank in a random permutation drawn once
  per run (``Cluster.set_tie_order``): a consistent order, which packs.

A node's GPUs are kept as a sorted tuple of idle milli (GPU indices do not change any score), and nodes in
identical states are grouped so that a policy scores each distinct state once per arrival.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kgm.sim.trace import MILLI, TraceNode, TracePod

__all__ = [
    "MAX_SPEC_CPU",
    "MAX_SPEC_GPU",
    "POLICY_NAMES",
    "Cluster",
    "PodDemand",
    "TypicalPod",
    "TypicalWorkload",
    "gpu_feed_ratios",
    "node_fragmentation",
    "stranded_gpu",
    "typical_workload",
]

MAX_SPEC_CPU = 128_000  # open-gpu-share utils.MaxSpecCpu, used to normalise CPU
MAX_SPEC_GPU = 8_000  # open-gpu-share utils.MaxSpecGpu
MAX_NODE_SCORE = 100
POPULARITY_THRESHOLD_PCT = 95  # typicalPodsConfig.podPopularityThreshold in the paper's experiments
POPULARITY_STEP = 1  # podIncreaseStep in the paper's experiment scripts

Gpus = tuple[int, ...]  # idle milli per GPU, sorted ascending
Score = tuple[float, ...]


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

    def for_model(self, model: str) -> tuple[float, tuple[tuple[float, int, int, int, int], ...]]:
        """(weight of the tasks that cannot use this model, [(weight, cpu, mem, num_gpu, gpu_milli)] of
        the others)."""
        no_access = 0.0
        usable: list[tuple[float, int, int, int, int]] = []
        for t in self.pods:
            # a CPU-only task leaves all idle GPU unused (XL/XR in the source: counted as fragment)
            if t.num_gpu == 0 or (t.spec and (not model or model not in t.spec)):
                no_access += t.weight
            else:
                usable.append((t.weight, t.cpu, t.mem, t.num_gpu, t.gpu_milli))
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


def _frag(
    cpu_left: int,
    mem_left: int,
    gpus: Gpus,
    no_access: float,
    usable: tuple[tuple[float, int, int, int, int], ...],
) -> float:
    total = sum(gpus)
    if total == 0:
        return 0.0
    prefix = [0]
    for g in gpus:
        prefix.append(prefix[-1] + g)
    n = len(gpus)
    acc = total * no_access
    for weight, cpu, mem, num, milli in usable:
        if cpu_left >= cpu and mem_left >= mem:
            idx = bisect_left(gpus, milli)
            if n - idx >= num:
                acc += weight * prefix[idx]
                continue
        acc += weight * total
    return acc


def node_fragmentation(
    node_model: str, cpu_left: int, gpus: Sequence[int], workload: TypicalWorkload
) -> float:
    """Expected idle GPU milli of a node that a task drawn from ``workload`` could not use."""
    no_access, usable = workload.for_model(node_model)
    return _frag(cpu_left, 0, tuple(sorted(gpus)), no_access, usable)


def _sigmoid_score(delta: float) -> int:
    """``int64(sigmoid(delta/1000) * MaxNodeScore)`` (fgd_score.go)."""
    x = delta / 1000.0
    if x < -700:
        return 0
    return int(MAX_NODE_SCORE / (1.0 + math.exp(-x)))


def _take_share(gpus: Gpus, value: int, milli: int) -> Gpus:
    lst = list(gpus)
    lst.pop(bisect_left(lst, value))
    insort(lst, value - milli)
    return tuple(lst)


def _take_whole(gpus: Gpus, num: int) -> Gpus:
    # the num fully free GPUs are the last ones of the sorted tuple
    return (0,) * num + gpus[: len(gpus) - num]


def place_best_fit(gpus: Gpus, pod: PodDemand) -> Gpus:
    """GPUs after placing ``pod`` on the best-fit GPU (least idle that fits) or on fully free GPUs."""
    if pod.num_gpu == 0 or pod.gpu_milli == 0:
        return gpus
    if pod.is_share:
        idx = bisect_left(gpus, pod.gpu_milli)
        return _take_share(gpus, gpus[idx], pod.gpu_milli)
    return _take_whole(gpus, pod.num_gpu)


# --------------------------------------------------------------------------------------------- policies


class Policy:
    """Scores a node state for a pod (higher is better) and places the pod on the chosen node's GPUs.

    ``score`` must be a pure function of (model, cpu_left, gpus, affinity tags, pod) so that the cluster
    can cache it per distinct node state.
    """

    name = ""
    uses_affinity = False
    # True: ties go to a uniformly random node instead of the node of smallest rank (see Cluster.choose)
    random_ties = False
    own_workload_threshold_pct: float | None = None  # score with the top types covering this % of pods
    memory_aware = False  # score with a typical workload whose types carry their memory

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        raise NotImplementedError

    def place(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, pod: PodDemand, rng: random.Random
    ) -> Gpus:
        return place_best_fit(gpus, pod)


class RandomPolicy(Policy):
    """``RandomScore``: a uniformly random feasible node; a random fitting GPU for sharing pods."""

    name = "random"
    # RandomScore.PreScore (random_score.go) draws one node with rand.Intn over the feasible nodes and
    # Score gives it MaxNodeScore, everyone else 0: a uniformly random node, no tie to break.
    random_ties = True

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        return (0.0,)

    def place(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, pod: PodDemand, rng: random.Random
    ) -> Gpus:
        if not pod.is_share:
            return place_best_fit(gpus, pod)
        fitting = [g for g in gpus if g >= pod.gpu_milli]
        return _take_share(gpus, rng.choice(fitting), pod.gpu_milli)


class BestFitPolicy(Policy):
    """``BestFitScore``: least (CPU, GPU) left after placement, each normalised by the max spec, 0.5/0.5."""

    name = "best-fit"

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        left = (cpu_left - pod.cpu) / MAX_SPEC_CPU * 0.5 + (sum(gpus) - pod.total_gpu) / MAX_SPEC_GPU * 0.5
        return (float(int((1.0 - left) * MAX_NODE_SCORE)),)


class DotProductPolicy(Policy):
    """``DotProductScore`` as the paper runs it (dimExtMethod merge, normMethod max, gpusel best):
    1 - <(CPU left, GPU left), (CPU, GPU demand)> / 2 with both normalised by the max spec, truncated."""

    name = "dot-product"

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        dot = cpu_left * pod.cpu / (MAX_SPEC_CPU * MAX_SPEC_CPU) + sum(gpus) * pod.total_gpu / (
            MAX_SPEC_GPU * MAX_SPEC_GPU
        )
        return (float(int(MAX_NODE_SCORE * (1.0 - dot / 2))),)


class GpuPackingPolicy(Policy):
    """``GpuPackingScore``: shared GPUs first (100 - idle%/10 of the GPUs used, >= 50), then fully free
    GPUs of a used node (50 - GPUs used, >= 33), then an idle node (33 - its GPUs). CPU pods: 0 everywhere.
    """

    name = "gpu-packing"

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        if pod.gpu_milli <= 0:
            return (0.0,)
        n = len(gpus)
        free = sum(1 for g in gpus if g == MILLI)
        if free == n:
            return (float(max(MAX_NODE_SCORE // 3 - free, free)),)
        need = pod.num_gpu
        free_used = 0
        used_idle_pct = 0
        for g in gpus:  # ascending: least idle first
            if need == 0:
                break
            if pod.gpu_milli <= g:
                need -= 1
                used_idle_pct += g * 100 // MILLI
                if g == MILLI:
                    free_used += 1
        if need:
            return (0.0,)
        if free_used > 0:
            return (float(max(MAX_NODE_SCORE // 2 - free_used, MAX_NODE_SCORE // 3)),)
        return (float(max(MAX_NODE_SCORE - used_idle_pct // 10, MAX_NODE_SCORE // 2)),)


class GpuClusteringPolicy(Policy):
    """``GpuClusteringScore``: prefer nodes whose pods all share the pod's GPU-demand tag (75..100),
    then nodes with that tag among others (50..75), then empty nodes (25..50), then others (0..25);
    within a band, the less idle GPU the better. CPU pods: 0 everywhere."""

    name = "gpu-clustering"
    uses_affinity = True

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        tag = pod.affinity
        if tag == "no-gpu":
            return (0.0,)
        base = MAX_NODE_SCORE // 4 * (MAX_SPEC_GPU - sum(gpus)) // MAX_SPEC_GPU
        band = (3 if len(tags) == 1 else 2) if tag in tags else (0 if tags else 1)
        return (float(base + MAX_NODE_SCORE * band // 4),)


class FgdPolicy(Policy):
    """``FGDScore``: sigmoid of the node's fragmentation decrease, truncated to 0..100; for a sharing pod,
    the GPU whose use gives the best score.

    Source: ``calculateGpuShareFragExtendScore`` (pkg/simulator/plugin/fgd_score.go) scores
    ``int64(sigmoid((before - after) / 1000) * MaxNodeScore)`` with ``utils.NodeGpuShareFragAmountScore``
    (pkg/utils/frag.go); ``allocateGpuIdBasedOnFGDScore`` re-runs it in Open-Gpu-Share's Reserve to pick
    the GPU. Known difference: among GPUs of equal truncated score the source keeps the first GPU index
    (``gpuId == "" || fragScore > score``); GPUs here are a sorted tuple without indices, so the tie goes
    to the least idle GPU instead.
    """

    name = "fgd"

    def frag(self, model: str, cpu_left: int, mem_left: int, gpus: Gpus) -> float:
        """The node's fragmentation that the score compares before and after placing the pod."""
        return self.cluster.policy_frag(model, cpu_left, mem_left, gpus)

    def _options(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, pod: PodDemand
    ) -> list[tuple[float, Gpus]]:
        """(fragmentation increase, GPUs after) for each distinct way to place the pod on this node."""
        frag = self.frag
        before = frag(model, cpu_left, mem_left, gpus)
        after_cpu = cpu_left - pod.cpu
        after_mem = mem_left - pod.mem
        if pod.is_share:
            out: list[tuple[float, Gpus]] = []
            last = -1
            for g in gpus:
                if g >= pod.gpu_milli and g != last:
                    last = g
                    new = _take_share(gpus, g, pod.gpu_milli)
                    out.append((frag(model, after_cpu, after_mem, new) - before, new))
            return out
        new = place_best_fit(gpus, pod)
        return [(frag(model, after_cpu, after_mem, new) - before, new)]

    def _pick(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, pod: PodDemand
    ) -> tuple[Score, Gpus]:
        best: tuple[Score, Gpus] | None = None
        for inc, new in self._options(model, cpu_left, mem_left, gpus, pod):
            s = (float(_sigmoid_score(-inc)),)
            if best is None or s > best[0]:
                best = (s, new)
        assert best is not None
        return best

    def score(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, tags: frozenset[str], pod: PodDemand
    ) -> Score:
        return self._pick(model, cpu_left, mem_left, gpus, pod)[0]

    def place(
        self, model: str, cpu_left: int, mem_left: int, gpus: Gpus, pod: PodDemand, rng: random.Random
    ) -> Gpus:
        return self._pick(model, cpu_left, mem_left, gpus, pod)[1]


def gpu_feed_ratios(workload: TypicalWorkload) -> tuple[float, float]:
    """(CPU milli, memory MiB) that the typical GPU tasks of ``workload`` request per milli-GPU, weighted by
    popularity (0 where the workload has no GPU task or no such demand)."""
    gpu_tasks = [t for t in workload.pods if t.num_gpu > 0 and t.gpu_milli > 0]
    gpu = sum(t.weight * t.num_gpu * t.gpu_milli for t in gpu_tasks)
    if gpu <= 0:
        return 0.0, 0.0
    return sum(t.weight * t.cpu for t in gpu_tasks) / gpu, sum(t.weight * t.mem for t in gpu_tasks) / gpu


def stranded_gpu(
    cpu_left: int, mem_left: int, idle_gpu: int, cpu_per_gpu: float, mem_per_gpu: float
) -> float:
    """Idle milli-GPU that the node's CPU and memory left cannot feed at the typical GPU tasks' CPU and
    memory per milli-GPU: ``max(0, idle - min(cpu_left / cpu_per_gpu, mem_left / mem_per_gpu))``."""
    feed = math.inf
    if cpu_per_gpu > 0:
        feed = cpu_left / cpu_per_gpu
    if mem_per_gpu > 0:
        feed = min(feed, mem_left / mem_per_gpu)
    return max(0.0, idle_gpu - feed)


class KgmPolicy(FgdPolicy):
    """Ours: FGD whose fragmentation also counts the GPU that the node's CPU and memory cannot feed.

    FGD's fragmentation counts a node's idle GPU as usable by a typical task as soon as ONE such task fits
    (GPU, model, CPU); it does not see that the node runs out of CPU or memory long before its GPUs are
    used. On the default trace the CPU is the binding resource on the 8-GPU nodes (12 cores per GPU for
    1-GPU tasks of ~11 cores), and most of FGD's unallocated GPU at 100 % arrived is idle GPU on nodes
    without the CPU (or memory) for another GPU task. kgm adds to each node's fragmentation the stranded
    GPU, ``max(0, idle milli-GPU - min(CPU left / c, memory left / m))`` where c and m are the popularity-
    weighted CPU and memory per milli-GPU of the typical GPU tasks (``gpu_feed_ratios``), and otherwise
    scores exactly as FGD: ``int(sigmoid(decrease / 1000) * 100)`` with ties to the node of smallest rank
    in the run's node order (the consistent tie order packs; finer scores or other tie-breaks measured
    worse). The fragmentation term is FGD's test of a typical task (GPU, model, CPU; memory is left to the
    stranded term) over kgm's typical workload: the source's construction (95 % popularity threshold,
    step 1) with memory part of a task type (``memory_aware``), which also gives c and m. The stranded term
    is in milli-GPU like the fragmentation, weight 1: nothing tuned. Caveat: gpuspec33 is bistable (~7 vs
    ~13 % unallocated, consistent over seeds); kgm lands at ~7 with thresholds 90-100, but the same policy
    over the source's memory-free types, or with memory checked in the fit, lands at ~13.
    """

    name = "kgm"
    memory_aware = True

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._ratios: tuple[float, float] | None = None
        self._by_model: dict[str, tuple[float, tuple[tuple[float, int, int, int, int], ...]]] = {}
        self._cache: dict[tuple[str, int, int, Gpus], float] = {}

    def frag(self, model: str, cpu_left: int, mem_left: int, gpus: Gpus) -> float:
        """The node's typical-workload fragmentation plus its stranded GPU (cached per node state)."""
        key = (model, cpu_left, mem_left, gpus)
        v = self._cache.get(key)
        if v is None:
            cpu_per_gpu, mem_per_gpu = self.feed_ratios()
            by_model = self._by_model.get(model)
            if by_model is None:
                by_model = self._by_model[model] = self.cluster.policy_workload.for_model(model)
            # FGD's test of a typical task (GPU, model, CPU; memory is left to the stranded term)
            v = _frag(cpu_left, 0, gpus, *by_model) + stranded_gpu(
                cpu_left, mem_left, sum(gpus), cpu_per_gpu, mem_per_gpu
            )
            self._cache[key] = v
        return v

    def feed_ratios(self) -> tuple[float, float]:
        """(CPU milli, memory MiB) per milli-GPU of the policy's typical GPU tasks."""
        if self._ratios is None:
            self._ratios = gpu_feed_ratios(self.cluster.policy_workload)
        return self._ratios


POLICY_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RandomPolicy,
        DotProductPolicy,
        GpuClusteringPolicy,
        GpuPackingPolicy,
        BestFitPolicy,
        FgdPolicy,
        KgmPolicy,
    )
}
POLICY_NAMES: tuple[str, ...] = tuple(POLICY_CLASSES)


# ---------------------------------------------------------------------------------------------- cluster

GroupKey = tuple[str, int, int, Gpus, frozenset[str]]


class Cluster:
    """Mutable cluster state: per node CPU/memory left and sorted idle GPU milli, grouped by state."""

    def __init__(
        self,
        nodes: Sequence[TraceNode],
        workload: TypicalWorkload,
        policy: str,
        policy_workload: TypicalWorkload | None = None,
    ) -> None:
        if policy not in POLICY_CLASSES:
            raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICY_NAMES)}")
        self.nodes = list(nodes)
        self.workload = workload
        self.policy_workload = workload if policy_workload is None else policy_workload
        self.policy = POLICY_CLASSES[policy](self)
        self._track_tags = self.policy.uses_affinity
        self._by_model = {m: workload.for_model(m) for m in {n.model for n in self.nodes}}
        self._frag_cache: dict[tuple[str, int, Gpus], float] = {}
        self.policy_frag: Callable[[str, int, int, Gpus], float] = self._frag_no_mem
        if policy_workload is not None and policy_workload != workload:
            by_model = {m: policy_workload.for_model(m) for m in self._by_model}
            uses_mem = any(t.mem for t in policy_workload.pods)
            cache: dict[tuple[str, int, int, Gpus], float] = {}

            def policy_frag(model: str, cpu_left: int, mem_left: int, gpus: Gpus) -> float:
                key = (model, cpu_left, mem_left if uses_mem else 0, gpus)
                v = cache.get(key)
                if v is None:
                    no_access, usable = by_model[model]
                    v = cache[key] = _frag(cpu_left, mem_left, gpus, no_access, usable)
                return v

            self.policy_frag = policy_frag
        self._score_cache: dict[tuple[GroupKey, tuple[int, int, int, str]], Score] = {}
        self.cpu_left = [n.cpu_milli for n in self.nodes]
        self.mem_left = [n.memory_mib for n in self.nodes]
        self.gpus: list[Gpus] = [(MILLI,) * n.gpu for n in self.nodes]
        self.tags: list[Counter[str]] = [Counter() for _ in self.nodes]
        self.total_gpu_milli = sum(n.gpu for n in self.nodes) * MILLI
        self.idle_gpu_milli = self.total_gpu_milli
        self.node_frag = [
            self.frag(n.model, n.cpu_milli, g) for n, g in zip(self.nodes, self.gpus, strict=True)
        ]
        self.frag_total = sum(self.node_frag)
        # tie order: rank[i] is node i's place in the order ties are broken in (smallest first); members of a
        # group are kept sorted by rank. Identity until set_tie_order draws the run's permutation.
        self.rank = list(range(len(self.nodes)))
        self.groups: dict[GroupKey, list[int]] = {}
        for i in range(len(self.nodes)):
            self.groups.setdefault(self._key(i), []).append(i)

    def set_tie_order(self, rng: random.Random) -> None:
        """Draw the order ties are broken in: a random permutation of the nodes, as the simulator's
        ``syncClusterResourceList`` (pkg/simulator/simulator.go) prefixes node names with ``rand.Perm``
        and its patched ``selectHost`` keeps the smallest name among equal scores."""
        perm = list(range(len(self.nodes)))
        rng.shuffle(perm)
        self.rank = perm
        for members in self.groups.values():
            members.sort(key=perm.__getitem__)

    def frag(self, model: str, cpu_left: int, gpus: Gpus) -> float:
        """The node's fragmentation for the (source's, memory-free) typical workload."""
        key = (model, cpu_left, gpus)
        v = self._frag_cache.get(key)
        if v is None:
            no_access, usable = self._by_model[model]
            v = _frag(cpu_left, 0, gpus, no_access, usable)
            self._frag_cache[key] = v
        return v

    def _frag_no_mem(self, model: str, cpu_left: int, mem_left: int, gpus: Gpus) -> float:
        return self.frag(model, cpu_left, gpus)

    def _key(self, i: int) -> GroupKey:
        tags = frozenset(self.tags[i]) if self._track_tags else frozenset()
        return (self.nodes[i].model, self.cpu_left[i], self.mem_left[i], self.gpus[i], tags)

    def feasible_groups(self, pod: PodDemand) -> Iterable[tuple[GroupKey, list[int]]]:
        cpu, mem, num, milli, spec = pod.cpu, pod.mem, pod.num_gpu, pod.gpu_milli, pod.spec
        gpu = num > 0 and milli > 0
        for key, members in self.groups.items():
            model, cpu_left, mem_left, gpus, _ = key
            if cpu_left < cpu or mem_left < mem:
                continue
            if gpu:
                n = len(gpus)
                if num > n or gpus[n - num] < milli or (spec and model not in spec):
                    continue
            yield key, members

    def choose(self, pod: PodDemand, rng: random.Random) -> int | None:
        """The node the policy puts ``pod`` on (None: no node fits); ties broken uniformly at random."""
        policy = self.policy
        cache = self._score_cache
        skey = (pod.cpu, pod.num_gpu, pod.gpu_milli, "|".join(sorted(pod.spec)))
        best: Score | None = None
        best_groups: list[list[int]] = []
        for key, members in self.feasible_groups(pod):
            ck = (key, skey)
            s = cache.get(ck)
            if s is None:
                s = policy.score(key[0], key[1], key[2], key[3], key[4], pod)
                cache[ck] = s
            if best is None or s > best:
                best = s
                best_groups = [members]
            elif s == best:
                best_groups.append(members)
        if best is None:
            return None
        if not policy.random_ties:
            # patched selectHost (vendor/.../scheduler/core/generic_scheduler.go): among equal scores the
            # smallest node name, i.e. the smallest rank; each group's members are sorted by rank
            rank = self.rank
            return min((m[0] for m in best_groups), key=rank.__getitem__)
        total = sum(len(m) for m in best_groups)
        pick = rng.randrange(total)
        for members in best_groups:
            if pick < len(members):
                return members[pick]
            pick -= len(members)
        raise AssertionError("unreachable")

    def place(self, i: int, pod: PodDemand, rng: random.Random) -> None:
        old_key = self._key(i)
        node = self.nodes[i]
        new_gpus = self.policy.place(node.model, self.cpu_left[i], self.mem_left[i], self.gpus[i], pod, rng)
        members = self.groups[old_key]
        members.remove(i)
        if not members:
            del self.groups[old_key]
        self.cpu_left[i] -= pod.cpu
        self.mem_left[i] -= pod.mem
        self.idle_gpu_milli += sum(new_gpus) - sum(self.gpus[i])
        self.gpus[i] = new_gpus
        if pod.affinity != "no-gpu":
            self.tags[i][pod.affinity] += 1
        f = self.frag(node.model, self.cpu_left[i], new_gpus)
        self.frag_total += f - self.node_frag[i]
        self.node_frag[i] = f
        insort(self.groups.setdefault(self._key(i), []), i, key=self.rank.__getitem__)

    def try_place(self, pod: PodDemand, rng: random.Random) -> int | None:
        i = self.choose(pod, rng)
        if i is not None:
            self.place(i, pod, rng)
        return i


def make_cluster(nodes: Sequence[TraceNode], pods: Sequence[TracePod], policy: str) -> Cluster:
    """A fresh cluster for ``policy``, with the paper's target workload built from ``pods``."""
    if policy not in POLICY_CLASSES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICY_NAMES)}")
    cls = POLICY_CLASSES[policy]
    threshold = cls.own_workload_threshold_pct
    own = (
        None
        if threshold is None and not cls.memory_aware
        else typical_workload(
            pods,
            threshold_pct=POPULARITY_THRESHOLD_PCT if threshold is None else threshold,
            with_memory=cls.memory_aware,
        )
    )
    return Cluster(nodes, typical_workload(pods), policy, own)


PolicyFactory = Callable[[Cluster], Policy]
