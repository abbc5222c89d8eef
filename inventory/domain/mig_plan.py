"""Which MIG layout each GPU should have, chosen from the demand (pure: no clock, no logger, no I/O).

The planner shapes the cluster's *free* GPU capacity after the workload: pods waiting for a profile
no free instance offers come first, then the recent mix of requests, spread over the next
``horizon_gpus`` of free capacity. It prices a state by its unmet demand (GPU-equivalents wanted
but not offered, each resource counted apart: a pod moved to 3g.40gb cannot use a 4g.40gb) plus,
weighted, the free MIG instances beyond it (stranded capacity, and bait that scatters small pods
over GPUs that could have stayed whole), and changes, one GPU at a time, the GPU whose new layout
lowers that price most, by at least ``min_gain_gpus`` (less for a waiting pod's one unit). Whole
GPU (MIG off) is one of the layouts. Ties go to the change that creates the least capacity nobody
wants, destroys and creates the fewest instances, and keeps each node's GPUs in one mode (whole
nodes stay free for multi-GPU pods).

Safety, whatever the demand: an instance holding an allocation keeps its profile and place (a
layout is only ever *extended* around it), a whole GPU holding one is never touched, so a change
destroys only free instances; at most ``max_nodes_per_round`` nodes and ``max_gpus_per_round``
GPUs change per round (nodes still reconfiguring count against it); a node changed less than
``min_seconds_between_changes`` ago, or whose MIG manager is not settled, is left alone. Every
change and every node left alone comes with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from inventory.domain.catalogue import GpuModel
from inventory.domain.labels import FULL_GPU_RESOURCE, MIG_RESOURCE_PREFIX
from inventory.domain.mig_candidates import Layout, candidate_layouts, describe
from inventory.domain.mig_layout import MigInstance
from inventory.domain.model import NodeName
from inventory.domain.shape import MIG_UNSETTLED_STATES


@dataclass(frozen=True, slots=True)
class GpuPlanState:
    """One GPU as the planner sees it: its layout (planned, if a change is under way) and what is held."""

    index: int
    model: GpuModel
    layout: Layout
    #: Starts of the instances that hold an allocation (a start names one instance of a GPU).
    held_starts: frozenset[int] = frozenset()
    #: MIG off: whether the whole GPU holds an allocation.
    whole_held: bool = False

    def held(self) -> tuple[MigInstance, ...]:
        return tuple(i for i in self.layout or () if i.start in self.held_starts)


@dataclass(frozen=True, slots=True)
class NodePlanState:
    name: NodeName
    gpus: tuple[GpuPlanState, ...]
    #: When the node's layout last changed, in the caller's seconds (None: never).
    last_changed_s: float | None = None
    #: A change was asked for and has not been reported done yet.
    reconfiguring: bool = False
    #: NVIDIA's MIG manager state (``nvidia.com/mig.config.state``), if the node has one.
    mig_manager_state: str | None = None


@dataclass(frozen=True, slots=True)
class MigDemand:
    """What the workload asks for, by resource name (``nvidia.com/gpu`` or ``nvidia.com/mig-*``)."""

    #: Units wanted by pods refused or pending because no free one exists.
    waiting: Mapping[str, int] = field(default_factory=dict)
    #: Units asked for by recent requests (the mix the free capacity is shaped after).
    recent: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    #: Nodes that may be reconfiguring at once (a change empties a node of new MIG pods meanwhile).
    max_nodes_per_round: int = 1
    #: GPUs changed per round at most (a node has 8 at most in practice).
    max_gpus_per_round: int = 8
    #: Seconds between two changes of one node: layouts must not flap with every arrival.
    min_seconds_between_changes: float = 300.0
    #: GPU-equivalents of free capacity shaped after the recent mix: more carves ahead of demand
    #: (no pod waits for a reconfiguration), less keeps capacity uncommitted.
    horizon_gpus: float = 16.0
    #: A change must lower the cost by this many GPU-equivalents (a change has a cost of its own),
    #: or by the size of one unit a pod waits for: a waiting pod is never too small to serve.
    min_gain_gpus: float = 0.3
    #: Weight of free MIG instances beyond what is wanted (one spare of each is free of charge):
    #: they strand capacity and scatter pods over GPUs that could have stayed whole.
    surplus_weight: float = 0.5
    #: Whether a GPU with instances in use may gain or lose free instances around them (NVIDIA
    #: creates and destroys one instance while others run). False: only GPUs with nothing held
    #: change, for an applier that re-creates all of a GPU's instances at once.
    change_gpus_in_use: bool = True


@dataclass(frozen=True, slots=True)
class GpuChange:
    node: NodeName
    gpu: int
    model: str
    before: Layout
    after: Layout
    #: Free instances the change destroys (never one that is held).
    destroyed: tuple[MigInstance, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class NodeHold:
    """A node the planner left alone this round, and why."""

    node: NodeName
    reason: str


@dataclass(frozen=True, slots=True)
class MigPlan:
    changes: tuple[GpuChange, ...]
    held_back: tuple[NodeHold, ...]
    #: One line on the round as a whole (what was unmet before and after).
    summary: str


def plan_layouts(
    nodes: Sequence[NodePlanState], demand: MigDemand, *, now_s: float, settings: PlanSettings
) -> MigPlan:
    """The changes of one planning round (possibly none), each with its reason."""
    units = _units(nodes)
    supply = Counter[str]()
    for node in nodes:
        for gpu in node.gpus:
            supply.update(_free(gpu))
    targets = _targets(demand, units, _free_capacity(nodes, units), settings.horizon_gpus)
    weight = settings.surplus_weight
    min_gain = min(
        [settings.min_gain_gpus]
        + [0.99 * units[r] for r, n in demand.waiting.items() if r in units and n > 0]
    )
    unmet_before = _unmet(supply, targets, units, weight)

    eligible, node_budget, held_back = _eligible(nodes, now_s, settings)
    changes: list[GpuChange] = []
    chosen_nodes: list[NodeName] = []
    changed: set[tuple[NodeName, int]] = set()  # GPUs done with this round (or not to be touched)
    if not settings.change_gpus_in_use:
        changed = {(n.name, g.index) for n in nodes for g in n.gpus if g.held_starts or g.whole_held}
    modes = {node.name: Counter(g.layout is None for g in node.gpus) for node in nodes}
    kinds = _kinds(nodes)
    while len(changes) < settings.max_gpus_per_round:
        allowed = (
            eligible if len(chosen_nodes) < node_budget else [n for n in eligible if n.name in chosen_nodes]
        )
        best = _best_change(allowed, changed, supply, targets, units, weight, modes, kinds)
        if best is None or best[0] < min_gain:
            break
        gain, node, gpu, layout = best
        unmet = _unmet(supply, targets, units, weight)
        supply.subtract(_free(gpu))
        supply.update(_free_of(layout, frozenset(), whole_held=False))
        reason = _reason(node.name, gpu, layout, unmet, unmet - gain, supply, targets)
        changes.append(_change(node.name, gpu, layout, reason))
        changed.add((node.name, gpu.index))
        modes[node.name][gpu.layout is None] -= 1
        modes[node.name][layout is None] += 1
        if node.name not in chosen_nodes:
            chosen_nodes.append(node.name)
    if len(changes) == settings.max_gpus_per_round:
        best = _best_change(eligible, changed, supply, targets, units, weight, modes, kinds)
        if best is not None and best[0] >= min_gain:
            held_back.append(
                NodeHold(best[1].name, f"budget of {settings.max_gpus_per_round} GPU changes per round spent")
            )
    after = _unmet(supply, targets, units, weight)
    summary = (
        f"unmet demand {unmet_before:.2f} -> {after:.2f} GPU-equivalents ({_wants(supply, targets)}); "
        f"{len(changes)} GPU(s) on {len(chosen_nodes)} node(s) changed"
        if changes
        else f"no change: unmet demand {unmet_before:.2f} GPU-equivalents ({_wants(supply, targets)}) "
        "and no allowed change lowers it"
    )
    return MigPlan(changes=tuple(changes), held_back=tuple(held_back), summary=summary)


def _eligible(
    nodes: Sequence[NodePlanState], now_s: float, settings: PlanSettings
) -> tuple[list[NodePlanState], int, list[NodeHold]]:
    """The nodes that may change this round, how many of them may, and the others with why not."""
    held_back: list[NodeHold] = []
    eligible: list[NodePlanState] = []
    busy = sum(1 for node in nodes if node.reconfiguring)
    for node in nodes:
        reason = _hold_reason(node, now_s, settings)
        if reason is None:
            eligible.append(node)
        elif _could_change(node):
            held_back.append(NodeHold(node.name, reason))
    node_budget = settings.max_nodes_per_round - busy
    if node_budget <= 0 and eligible:
        reason = f"{busy} node(s) still reconfiguring (at most {settings.max_nodes_per_round})"
        held_back.append(NodeHold(eligible[0].name, reason))
        eligible = []
    return eligible, node_budget, held_back


def _kinds(nodes: Sequence[NodePlanState]) -> dict[tuple[NodeName, int], object]:
    """GPUs alike for the choice share one evaluation: the same model (by identity: hashing frozen
    dataclasses of dataclasses for every GPU dominated a round), layout and instances held."""
    return {
        (n.name, g.index): (id(g.model), g.layout is None, _keys(g.layout), g.held_starts)
        for n in nodes
        for g in n.gpus
    }


def _hold_reason(node: NodePlanState, now_s: float, settings: PlanSettings) -> str | None:
    if node.mig_manager_state in MIG_UNSETTLED_STATES:
        return f"MIG manager state is {node.mig_manager_state}: its layout cannot be trusted"
    if node.reconfiguring:
        return "a change is still being applied"
    if node.last_changed_s is not None:
        waited = now_s - node.last_changed_s
        if waited < settings.min_seconds_between_changes:
            return (
                f"changed {waited:.0f} s ago; at least {settings.min_seconds_between_changes:.0f} s "
                "between changes of one node"
            )
    return None


def _could_change(node: NodePlanState) -> bool:
    return any(g.model.mig_capable and not g.whole_held for g in node.gpus)


def _best_change(
    nodes: Sequence[NodePlanState],
    changed: set[tuple[NodeName, int]],
    supply: Counter[str],
    targets: Mapping[str, float],
    units: Mapping[str, float],
    weight: float,
    modes: Mapping[NodeName, Counter[bool]],
    kinds: Mapping[tuple[NodeName, int], object],
) -> tuple[float, NodePlanState, GpuPlanState, Layout] | None:
    """The GPU and layout that lower unmet demand most (ties: see the module's docstring)."""
    memo: dict[object, tuple[float, float, int, Layout] | None] = {}
    best: tuple[tuple[float, float, int, int, str, int], NodePlanState, GpuPlanState, Layout] | None = None
    for node in nodes:
        for gpu in node.gpus:
            if (node.name, gpu.index) in changed or not gpu.model.mig_capable or gpu.whole_held:
                continue
            key = kinds[node.name, gpu.index]
            if key not in memo:
                memo[key] = _best_layout(gpu, supply, targets, units, weight)
            found = memo[key]
            if found is None:
                continue
            gain, waste, churn, layout = found
            same_mode = modes[node.name][layout is None] - (
                1 if (gpu.layout is None) == (layout is None) else 0
            )
            rank = (gain, -waste, -churn, same_mode, _neg(node.name), -gpu.index)
            if best is None or rank > best[0]:
                best = (rank, node, gpu, layout)
    return None if best is None else (best[0][0], best[1], best[2], best[3])


def _neg(name: str) -> str:
    # Ranks are maximised; the first node by name should win a tie, so compare inverted code points.
    return "".join(chr(0x10FFFF - ord(c)) for c in name)


def _best_layout(
    gpu: GpuPlanState,
    supply: Counter[str],
    targets: Mapping[str, float],
    units: Mapping[str, float],
    weight: float,
) -> tuple[float, float, int, Layout] | None:
    """The layout for ``gpu`` that lowers unmet demand most: (gain, waste, churn, layout)."""
    kept = tuple((i.profile.name, i.start) for i in gpu.held())
    current = _free(gpu)
    before = _keys(gpu.layout)
    best: tuple[float, float, int, Layout] | None = None
    for layout, offered, keys in _candidates(gpu.model, kept):
        if keys == before and (layout is None) == (gpu.layout is None):
            continue
        gain = waste = 0.0
        for resource in sorted(current.keys() | offered.keys()):  # sorted: the same sums in every process
            unit = units.get(resource, 1.0)
            want = targets.get(resource, 0.0)
            now = supply.get(resource, 0)
            then = now - current.get(resource, 0) + offered.get(resource, 0)
            gain += _cost(resource, now, want, unit, weight) - _cost(resource, then, want, unit, weight)
            if resource != FULL_GPU_RESOURCE:  # MIG instances beyond what is wanted would sit idle
                waste += max(0.0, then - max(want, now)) * unit
        churn = len(before - keys) + len(keys - before)
        if best is None or (gain, -waste, -churn) > (best[0], -best[1], -best[2]):
            best = (gain, waste, churn, layout)
    return best


@cache
def _candidates(
    model: GpuModel, kept: tuple[tuple[str, int], ...]
) -> tuple[tuple[Layout, Mapping[str, int], frozenset[tuple[str, int]]], ...]:
    """Each candidate layout with what it offers when new and its instances' keys (computed once)."""
    return tuple(
        (layout, dict(_free_of(layout, frozenset(), whole_held=False)), _keys(layout))
        for layout in candidate_layouts(model, kept)
    )


def _keys(layout: Layout) -> frozenset[tuple[str, int]]:
    return frozenset((i.profile.name, i.start) for i in layout or ())


def _destroyed(before: Layout, after: Layout) -> tuple[MigInstance, ...]:
    keep = {(i.profile.name, i.start) for i in after or ()}
    return tuple(i for i in before or () if (i.profile.name, i.start) not in keep)


def _change(node: NodeName, gpu: GpuPlanState, layout: Layout, reason: str) -> GpuChange:
    destroyed = _destroyed(gpu.layout, layout)
    # The invariant every caller relies on, checked where the plan is made.
    assert not any(i.start in gpu.held_starts for i in destroyed), "a held instance would be destroyed"
    assert not (gpu.whole_held and layout is not None), "a held whole GPU would be partitioned"
    return GpuChange(
        node=node,
        gpu=gpu.index,
        model=gpu.model.name,
        before=gpu.layout,
        after=layout,
        destroyed=destroyed,
        reason=reason,
    )


def _free(gpu: GpuPlanState) -> Counter[str]:
    return _free_of(gpu.layout, gpu.held_starts, whole_held=gpu.whole_held)


def _free_of(layout: Layout, held: frozenset[int], *, whole_held: bool) -> Counter[str]:
    if layout is None:
        return Counter() if whole_held else Counter({FULL_GPU_RESOURCE: 1})
    return Counter(i.profile.resource_name for i in layout if i.start not in held)


def _units(nodes: Sequence[NodePlanState]) -> dict[str, float]:
    """GPU-equivalents of one unit of each resource (a MIG instance: its share of compute slices)."""
    units = {FULL_GPU_RESOURCE: 1.0}
    for model in {g.model.name: g.model for n in nodes for g in n.gpus if g.model.mig_capable}.values():
        for profile in model.profiles:
            share = profile.compute_slices / model.compute_slices_total
            units[profile.resource_name] = min(units.get(profile.resource_name, share), share)
    return units


def _free_capacity(nodes: Sequence[NodePlanState], units: Mapping[str, float]) -> float:
    """Free GPU-equivalents, whatever their shape: free instances, whole GPUs, uncarved slices."""
    free = 0.0
    for gpu in (g for n in nodes for g in n.gpus):
        if gpu.layout is None:
            free += 0.0 if gpu.whole_held else 1.0
            continue
        used = sum(i.profile.compute_slices for i in gpu.held())
        free += (gpu.model.compute_slices_total - used) / (gpu.model.compute_slices_total or 1)
    return free


def _targets(
    demand: MigDemand, units: Mapping[str, float], free_gpus: float, horizon_gpus: float
) -> dict[str, float]:
    """Units of each resource the free capacity should offer: every waiting one, then the recent
    mix spread over the horizon (what is left of the free capacity, if less)."""
    known = {r: n for r, n in demand.recent.items() if r in units and n > 0}
    waiting = {r: float(n) for r, n in demand.waiting.items() if r in units and n > 0}
    left = max(0.0, min(horizon_gpus, free_gpus - sum(n * units[r] for r, n in waiting.items())))
    mix_total = sum(n * units[r] for r, n in known.items())
    targets = dict(waiting)
    for resource, count in known.items():
        targets[resource] = targets.get(resource, 0.0) + left * count / mix_total
    return targets


def _unmet(
    supply: Mapping[str, int], targets: Mapping[str, float], units: Mapping[str, float], weight: float
) -> float:
    """The cost of a state: demand unmet, plus free MIG instances beyond it (weighted)."""
    return sum(
        _cost(r, supply.get(r, 0), targets.get(r, 0.0), units.get(r, 1.0), weight)
        for r in sorted({*supply, *targets})
    )


def _cost(resource: str, have: float, want: float, unit: float, weight: float) -> float:
    cost = max(0.0, want - have) * unit
    if resource != FULL_GPU_RESOURCE:  # free whole GPUs are the neutral pool, never surplus
        cost += weight * max(0.0, have - want - 1.0) * unit
    return cost


def _wants(supply: Mapping[str, int], targets: Mapping[str, float]) -> str:
    parts = [
        f"{_short(r)} {want:.1f} wanted, {supply.get(r, 0)} free"
        for r, want in sorted(targets.items(), key=lambda kv: -kv[1])
        if want >= 0.05
    ]
    return "; ".join(parts) or "no demand"


def _short(resource: str) -> str:
    return "whole GPU" if resource == FULL_GPU_RESOURCE else resource.removeprefix(MIG_RESOURCE_PREFIX)


def _reason(
    node: NodeName,
    gpu: GpuPlanState,
    layout: Layout,
    unmet_before: float,
    unmet_after: float,
    supply: Mapping[str, int],
    targets: Mapping[str, float],
) -> str:
    destroyed = _destroyed(gpu.layout, layout)
    kept = gpu.held()
    what = f"{len(destroyed)} free instance(s) destroyed" if destroyed else "nothing destroyed"
    if kept:
        what += f", {len(kept)} held instance(s) kept in place"
    return (
        f"{node} GPU {gpu.index} ({gpu.model.name}): {describe(gpu.layout)} -> {describe(layout)}; "
        f"unmet demand {unmet_before:.2f} -> {unmet_after:.2f} GPU-equivalents "
        f"({_wants(supply, targets)}); {what}"
    )
