"""Filter: can this node take the pod now, and if not, why, in words a person can act on?

Two kinds of "no", as kube-scheduler distinguishes them: *failed* when evicting lower-priority pods
could make room (preemption may try), *unresolvable* when no eviction ever would (the node has too
few such GPUs at all, the wrong model, a stale inventory, or no agent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from extender.demand import GpuDemand
from extender.service import FilterOutcome
from inventory.cache import InventorySnapshot, NodeCapacity, NodeRecord
from inventory.model import GpuDevice, NodeName


@dataclass(frozen=True, slots=True)
class Verdict:
    fits: bool
    reason: str | None = None
    unresolvable: bool = False


FITS = Verdict(fits=True)


def filter_nodes(demand: GpuDemand, node_names: Sequence[str], snapshot: InventorySnapshot) -> FilterOutcome:
    if not demand.wants_gpus:
        return FilterOutcome(passed=list(node_names))  # not a GPU pod: every node is fine by us
    outcome = FilterOutcome(passed=[])
    for name in node_names:
        verdict = judge(demand, NodeName(name), snapshot)
        if verdict.fits:
            outcome.passed.append(name)
        elif verdict.unresolvable:
            outcome.unresolvable[name] = verdict.reason or "cannot host the pod"
        else:
            outcome.failed[name] = verdict.reason or "no room"
    return outcome


def judge(demand: GpuDemand, name: NodeName, snapshot: InventorySnapshot) -> Verdict:
    record = snapshot.nodes.get(name)
    if record is None:
        return Verdict(
            False, f"no GPU inventory for node {name}: is kgm-agent running there?", unresolvable=True
        )
    return judge_capacity(demand, snapshot.capacity(name), record)


def judge_capacity(demand: GpuDemand, capacity: NodeCapacity, record: NodeRecord) -> Verdict:
    if not capacity.schedulable:
        return Verdict(False, capacity.reason, unresolvable=True)
    gpus = record.gpunode.inventory.gpus
    if demand.products is not None and not any(demand.products & gpu.model.aliases for gpu in gpus):
        models = ", ".join(sorted({gpu.model.name for gpu in gpus})) or "no GPUs"
        wanted = ", ".join(sorted(demand.products))
        return Verdict(False, f"node has {models}; the pod asks for nvidia.com/gpu.product {wanted}", True)
    for resource, count in sorted(demand.mig.items()):
        verdict = _mig_verdict(resource, count, capacity, gpus)
        if not verdict.fits:
            return verdict
    if demand.full_gpus:
        return _full_gpu_verdict(demand, capacity, gpus)
    return FITS


def _mig_verdict(resource: str, count: int, capacity: NodeCapacity, gpus: Iterable[GpuDevice]) -> Verdict:
    if not capacity.mig_schedulable:
        return Verdict(False, capacity.mig_reason, unresolvable=True)
    short = resource.removeprefix("nvidia.com/")
    total = capacity.mig_total.get(resource, 0)
    free = capacity.mig_free.get(resource, 0)
    if total < count:
        reason = f"no {short} here: {total} exist, {count} needed" + _unhealthy_note(gpus)
        return Verdict(False, reason, unresolvable=True)
    if free < count:
        return Verdict(False, f"no free {short}: {free} of {total} free")
    return FITS


def _full_gpu_verdict(demand: GpuDemand, capacity: NodeCapacity, gpus: Iterable[GpuDevice]) -> Verdict:
    wanted = demand.full_gpus
    memory = demand.memory_gb
    eligible = sum(1 for gb in capacity.full_gpu_memory_gb if memory is None or gb >= memory)
    sized = f" with {memory} GB" if memory is not None else ""
    if eligible < wanted:
        reason = f"{wanted} whole GPUs{sized} requested, node has {eligible}" + _unhealthy_note(gpus)
        return Verdict(False, reason, unresolvable=True)
    # Whole GPUs too small for the pod may be the free ones: count pessimistically.
    free = max(0, capacity.full_gpus_free - (capacity.full_gpus_total - eligible))
    if free < wanted:
        return Verdict(False, f"{wanted} whole GPUs{sized} requested, {free} free after reservations")
    return FITS


def _unhealthy_note(gpus: Iterable[GpuDevice]) -> str:
    sick = [g for g in gpus if not g.healthy]
    if not sick:
        return ""
    shown = "; ".join(
        f"{(g.uuid or f'GPU {g.index}')[:12]}… unhealthy: {g.unhealthy_reason}" for g in sick[:2]
    )
    more = f" (+{len(sick) - 2} more)" if len(sick) > 2 else ""
    return f"; {shown}{more}"
