"""What a pod needs from a node's GPUs, read once per scheduling call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from inventory.domain.labels import (
    ALLOCATION_ID,
    FULL_GPU_RESOURCE,
    MIG_RESOURCE_PREFIX,
    PLACEMENT_POLICY,
    PRODUCT_LABEL,
)
from inventory.domain.pods import IntentError, container_gpus, parse_intent, pod_gpu_total


@dataclass(frozen=True, slots=True)
class GpuDemand:
    #: GPU resources the pod holds (Kubernetes' effective pod request).
    resources: Mapping[str, int]
    #: Memory each whole GPU must have, from ``gpu.kgm.io/memory-gb``.
    memory_gb: Decimal | None = None
    #: Allowed ``nvidia.com/gpu.product`` values, lower-cased; None when the pod does not care.
    products: frozenset[str] | None = None
    policy: str | None = None
    allocation_id: str | None = None

    @property
    def wants_gpus(self) -> bool:
        return bool(self.resources)

    @property
    def full_gpus(self) -> int:
        return self.resources.get(FULL_GPU_RESOURCE, 0)

    @property
    def mig(self) -> dict[str, int]:
        return {r: n for r, n in self.resources.items() if r.startswith(MIG_RESOURCE_PREFIX)}


def demand_of(pod: Mapping[str, Any]) -> GpuDemand:
    """The pod's GPU demand. Bad annotations (which admission refuses) are read as absent here:
    the scheduler must still place a pod created before the webhook was installed."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    try:
        memory_gb = parse_intent(annotations).memory_gb
    except IntentError:
        memory_gb = None
    policy = annotations.get(PLACEMENT_POLICY)
    allocation_id = annotations.get(ALLOCATION_ID)
    return GpuDemand(
        resources=pod_gpu_total(container_gpus(pod)),
        memory_gb=memory_gb,
        products=_products(pod.get("spec") or {}),
        policy=policy if isinstance(policy, str) else None,
        allocation_id=allocation_id if isinstance(allocation_id, str) else None,
    )


def _products(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """Products allowed by the node selector and the required node affinity (their intersection)."""
    allowed: frozenset[str] | None = None
    selector = spec.get("nodeSelector") or {}
    if isinstance(selector, Mapping) and isinstance(selector.get(PRODUCT_LABEL), str):
        allowed = frozenset({selector[PRODUCT_LABEL].lower()})
    terms = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms")
    )
    if isinstance(terms, list) and terms:
        # Terms are ORed: the affinity limits the product only if every term does.
        per_term = [_term_products(term) for term in terms if isinstance(term, Mapping)]
        if per_term and all(values is not None for values in per_term):
            union = frozenset(v for values in per_term if values is not None for v in values)
            allowed = union if allowed is None else allowed & union
    return allowed


def _term_products(term: Mapping[str, Any]) -> frozenset[str] | None:
    for expression in term.get("matchExpressions") or []:
        if (
            isinstance(expression, Mapping)
            and expression.get("key") == PRODUCT_LABEL
            and expression.get("operator") == "In"
        ):
            return frozenset(str(v).lower() for v in expression.get("values") or [])
    return None
