"""The cluster under simulation: per node CPU, memory and GPUs left, nodes grouped by state, and the
choice of a node for each arriving pod.

Ties do NOT go to a random node: the simulator behind the FGD paper (hkust-adsl/kubernetes-scheduler-
simulator) vendors a patched kube-scheduler whose ``selectHost``
(vendor/k8s.io/kubernetes/pkg/scheduler/core/generic_scheduler.go) keeps "the smallest lexicographical
order if the score remains the same", and ``Simulator.syncClusterResourceList``
(pkg/simulator/simulator.go) renames node i to ``fmt.Sprintf("%04d-", rand.Perm(n)[i]) + name`` after the
workload has been tuned. So a tie goes to the node of smallest rank in a random permutation drawn once
per run (``Cluster.set_tie_order``): a consistent order, which packs.

Nodes in identical states are grouped so that a policy scores each distinct state once per arrival.
"""

from __future__ import annotations

import random
from bisect import insort
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from kgm.sim.fragmentation import frag_amount
from kgm.sim.gpus import Gpus
from kgm.sim.policies import POLICY_CLASSES, POLICY_NAMES, Policy, Score
from kgm.sim.trace import MILLI, TraceNode, TracePod
from kgm.sim.workload import POPULARITY_THRESHOLD_PCT, PodDemand, TypicalWorkload, typical_workload

__all__ = ["Cluster", "make_cluster"]

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
                    v = cache[key] = frag_amount(cpu_left, mem_left, gpus, no_access, usable)
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
            v = frag_amount(cpu_left, 0, gpus, no_access, usable)
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
