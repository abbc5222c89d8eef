"""Whether a node of a given shape can take a pod's GPU demand, and if not, why (pure).

Shared by the extender (filter and bind) and reservations, so both judge capacity alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from inventory.domain.demand import GpuDemand
from inventory.domain.labels import RESOURCE_PREFIX
from inventory.domain.shape import NodeShape


@dataclass(frozen=True, slots=True)
class Verdict:
    fits: bool
    reason: str | None = None
    unresolvable: bool = False


FITS = Verdict(fits=True)


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
    short = resource.removeprefix(RESOURCE_PREFIX)
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


def refusal(demand: GpuDemand, shape: NodeShape) -> str | None:
    """Why a node of this shape cannot take the demand, or None: the form ``try_assume`` takes."""
    verdict = judge_shape(demand, shape)
    return None if verdict.fits else verdict.reason or "no room"
