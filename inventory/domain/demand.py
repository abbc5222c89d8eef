"""What a pod needs from a node's GPUs, read once per scheduling call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from inventory.domain.labels import (
    ALLOCATION_ID,
    FULL_GPU_RESOURCE,
    MIG_RESOURCE_PREFIX,
    PLACEMENT_POLICY,
    PRODUCT_LABEL,
)
from inventory.domain.pods import (
    IntentError,
    PodError,
    container_gpus,
    list_at,
    mapping_at,
    parse_intent,
    pod_gpu_total,
    strings_at,
)

#: The values of ``gpu.kgm.io/placement-policy`` the extender's prioritize knows (``fragmentation`` is
#: its default); admission refuses any other, which prioritize would silently read as the default.
PLACEMENT_POLICIES: Final = ("fragmentation", "binpack", "spread", "cost")


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
    the scheduler must still place a pod created before the webhook was installed.

    Raises :class:`~inventory.domain.pods.PodError` naming the first field of the wrong type, or
    ``InvalidPodError`` for a GPU count Kubernetes refuses: the caller sent something that is not a
    valid pod (kube-scheduler never does), and gets a refusal rather than a guess.
    """
    metadata = mapping_at(pod.get("metadata"), "metadata") or {}
    annotations = strings_at(metadata.get("annotations"), "metadata.annotations")
    spec = mapping_at(pod.get("spec"), "spec") or {}
    resources = pod_gpu_total(container_gpus(pod, strict=True))
    try:
        memory_gb = parse_intent(annotations).memory_gb
    except IntentError:
        memory_gb = None
    return GpuDemand(
        resources=resources,
        memory_gb=memory_gb,
        products=_products(spec),
        policy=annotations.get(PLACEMENT_POLICY),
        allocation_id=annotations.get(ALLOCATION_ID),
    )


_REQUIRED = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


def _products(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """Products allowed by the node selector and the required node affinity (their intersection)."""
    allowed: frozenset[str] | None = None
    selector = strings_at(spec.get("nodeSelector"), "spec.nodeSelector")
    if PRODUCT_LABEL in selector:
        allowed = frozenset({selector[PRODUCT_LABEL].lower()})
    affinity = mapping_at(spec.get("affinity"), "spec.affinity") or {}
    node_affinity = mapping_at(affinity.get("nodeAffinity"), "spec.affinity.nodeAffinity") or {}
    required = mapping_at(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"), _REQUIRED)
    terms = list_at((required or {}).get("nodeSelectorTerms"), f"{_REQUIRED}.nodeSelectorTerms")
    # Terms are ORed: the affinity limits the product only if every term does.
    per_term = [_term_products(term, f"{_REQUIRED}.nodeSelectorTerms[{i}]") for i, term in enumerate(terms)]
    if per_term and all(values is not None for values in per_term):
        union = frozenset(v for values in per_term if values is not None for v in values)
        allowed = union if allowed is None else allowed & union
    return allowed


def _term_products(term: object, path: str) -> frozenset[str] | None:
    """The products one node selector term allows (None: any), its expressions checked as read."""
    found = mapping_at(term, path) or {}
    products = None
    for index, item in enumerate(list_at(found.get("matchExpressions"), f"{path}.matchExpressions")):
        where = f"{path}.matchExpressions[{index}]"
        expression = mapping_at(item, where) or {}
        key, operator = expression.get("key"), expression.get("operator")
        values = list_at(expression.get("values"), f"{where}.values")
        for name, value in (("key", key), ("operator", operator)):
            if not isinstance(value, str):
                raise PodError(f"{where}.{name} must be a string")
        for position, value in enumerate(values):
            if not isinstance(value, str):
                raise PodError(f"{where}.values[{position}] must be a string")
        if products is None and key == PRODUCT_LABEL and operator == "In":
            products = frozenset(value.lower() for value in values)
    return products
