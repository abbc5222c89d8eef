"""Filter: can this node take the pod now, and if not, why, in words a person can act on?

Two kinds of "no", as kube-scheduler distinguishes them: *failed* when evicting lower-priority pods
could make room (preemption may try), *unresolvable* when no eviction ever would (the node has too
few such GPUs at all, the wrong model, a stale inventory, or no agent).
"""

from __future__ import annotations

from collections.abc import Sequence

from extender.service import FilterOutcome
from inventory.domain.demand import GpuDemand
from inventory.domain.fit import Verdict, judge_shape
from inventory.domain.snapshot import InventorySnapshot


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
