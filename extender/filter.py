"""Filter: can this node take the pod now, and if not, why, in words a person can act on?

Two kinds of "no", as kube-scheduler distinguishes them: *failed* when evicting lower-priority pods
could make room (preemption may try), *unresolvable* when no eviction ever would (the node has too
few such GPUs at all, the wrong model, a stale inventory, or no agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from extender.demand import GpuDemand
from extender.service import FilterOutcome
from inventory.cache import InventorySnapshot
from inventory.model import NodeName
from inventory.shape import NodeShape


@dataclass(frozen=True, slots=True)
class Verdict:
    fits: bool
    reason: str | None = None
    unresolvable: bool = False


FITS = Verdict(fits=True)


def filter_nodes(
    demand: GpuDemand,
    node_names: Sequence[str],
    snapshot: InventorySnapshot,
    memo: dict[int, Verdict] | None = None,
) -> FilterOutcome:
    """Judge every node. ``memo`` maps shape ids to verdicts for this kind of pod: nodes of one
    shape get one verdict, so a large cluster costs a lookup per node (the hot path: measured by
    benchmarks/extender.py)."""
    if not demand.wants_gpus:
        return FilterOutcome(passed=list(node_names))  # not a GPU pod: every node is fine by us
    memo = {} if memo is None else memo
    states = snapshot.states
    oldest = snapshot.taken_at - snapshot.settings.stale_after_s
    outcome = FilterOutcome(passed=[])
    for name in node_names:
        state = states.get(name)  # type: ignore[call-overload]  # NodeName(name) per node costs time
        if state is None:
            outcome.unresolvable[name] = f"no GPU inventory for node {name}: is kgm-agent running there?"
            continue
        if state.seen_at < oldest:
            outcome.unresolvable[name] = snapshot.stale_reason(state) or "inventory stale"
            continue
        verdict = memo.get(state.shape_id)
        if verdict is None:
            verdict = memo[state.shape_id] = judge_shape(demand, state.shape)
        if verdict.fits:
            outcome.passed.append(name)
        elif verdict.unresolvable:
            outcome.unresolvable[name] = verdict.reason or "cannot host the pod"
        else:
            outcome.failed[name] = verdict.reason or "no room"
    return outcome


def judge(demand: GpuDemand, name: NodeName, snapshot: InventorySnapshot) -> Verdict:
    """One node, now (bind's last check)."""
    state = snapshot.states.get(name)
    if state is None:
        return Verdict(
            False, f"no GPU inventory for node {name}: is kgm-agent running there?", unresolvable=True
        )
    stale = snapshot.stale_reason(state)
    if stale is not None:
        return Verdict(False, stale, unresolvable=True)
    return judge_shape(demand, state.shape)


def judge_shape(demand: GpuDemand, shape: NodeShape) -> Verdict:
    """Whether a node of this shape can take the pod (a pure function: memoized by shape id)."""
    if demand.products is not None and not demand.products & shape.aliases:
        models = ", ".join(shape.models) or "no GPUs"
        wanted = ", ".join(sorted(demand.products))
        return Verdict(False, f"node has {models}; the pod asks for nvidia.com/gpu.product {wanted}", True)
    for resource, count in sorted(demand.mig.items()):
        verdict = _mig_verdict(resource, count, shape)
        if not verdict.fits:
            return verdict
    if demand.full_gpus:
        return _full_gpu_verdict(demand, shape)
    return FITS


def _mig_verdict(resource: str, count: int, shape: NodeShape) -> Verdict:
    if shape.mig_blocked is not None:
        return Verdict(False, shape.mig_blocked, unresolvable=True)
    short = resource.removeprefix("nvidia.com/")
    total = shape.total(resource)
    free = shape.free(resource)
    if total < count:
        reason = f"no {short} here: {total} exist, {count} needed" + _unhealthy_note(shape)
        return Verdict(False, reason, unresolvable=True)
    if free < count:
        return Verdict(False, f"no free {short}: {free} of {total} free")
    return FITS


def _full_gpu_verdict(demand: GpuDemand, shape: NodeShape) -> Verdict:
    wanted = demand.full_gpus
    memory = demand.memory_gb
    eligible = sum(1 for gb in shape.full_gpu_memory_gb if memory is None or gb >= memory)
    sized = f" with {memory} GB" if memory is not None else ""
    if eligible < wanted:
        reason = f"{wanted} whole GPUs{sized} requested, node has {eligible}" + _unhealthy_note(shape)
        return Verdict(False, reason, unresolvable=True)
    # Whole GPUs too small for the pod may be the free ones: count pessimistically.
    free = max(0, shape.full_gpus_free - (shape.full_gpus_total - eligible))
    if free < wanted:
        return Verdict(False, f"{wanted} whole GPUs{sized} requested, {free} free after reservations")
    return FITS


def _unhealthy_note(shape: NodeShape) -> str:
    if not shape.unhealthy:
        return ""
    shown = "; ".join(f"{gpu[:12]}… unhealthy: {reason}" for gpu, reason in shape.unhealthy[:2])
    more = f" (+{len(shape.unhealthy) - 2} more)" if len(shape.unhealthy) > 2 else ""
    return f"; {shown}{more}"
