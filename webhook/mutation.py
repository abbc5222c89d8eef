"""The admission decision for a pod: a pure function from (pod, offer, settings) to a patch or a denial.

The rule: a container asking for exactly one whole GPU moves to the smallest MIG instance offered
that covers ``gpu.kgm.io/memory-gb`` when a MIG instance is wanted (``use-mig: true``; or a memory
size given, ``use-mig`` not ``false`` and the workload not ``Training``). The pod is labelled for cost
and ownership, priced, and routed to the GPU scheduler. The result is idempotent: the pod it produces
carries a fingerprint, and a pod whose fingerprint still matches is left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import orjson

from inventory.domain.allocation import Allocation, Status
from inventory.domain.demand import PLACEMENT_POLICIES
from inventory.domain.labels import (
    ALLOCATION_ID,
    COST_PER_HOUR,
    FULL_GPU_RESOURCE,
    GPU_PROFILE,
    MEMORY_GB,
    MIG_FALLBACK,
    MIG_RESOURCE_PREFIX,
    MUTATED,
    ORIGINAL_REQUEST,
    PLACEMENT_POLICY,
    PRODUCT_LABEL,
    RESOURCE_PREFIX,
    TEAM,
    USE_MIG,
    USER,
    WORKLOAD_TYPE,
)
from inventory.domain.offer import Offer, OfferedResource, hourly_price, no_mig_fit_reason, smallest_mig_fit
from inventory.domain.pods import (
    ContainerGpus,
    GpuIntent,
    IntentError,
    InvalidPodError,
    PodError,
    TooManyGpuContainersError,
    container_gpus,
    parse_intent,
    pod_gpu_total,
    strings_at,
    wants_mig,
)
from webhook.advice import brief, mig_smaller_than_asked
from webhook.copies import first_asks
from webhook.patch import PatchOp, replace_key, set_entries
from webhook.pinning import pin_to_node
from webhook.settings import WebhookSettings

_DEFAULT_SCHEDULERS = ("", "default-scheduler")
_INTENT_KEYS = (MEMORY_GB, WORKLOAD_TYPE, USE_MIG, TEAM, USER, ALLOCATION_ID)


@dataclass(frozen=True, slots=True)
class Admit:
    patch: list[PatchOp] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Deny:
    message: str
    code: int
    reason: str


def mutate_pod(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    offer: Offer,
    settings: WebhookSettings,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
) -> Admit | Deny:
    """What admission does to ``pod`` (the ``object`` of a Pod CREATE review).

    ``reservation(id)`` reads a reservation the pod names in ``gpu.kgm.io/allocation-id`` (a read:
    admission never writes anywhere); such a pod gets the reserved resource and is pinned to its node.

    A pure function of (pod, namespace, offer, settings, reservation): the same inputs, the same
    answer. The pod fields it reads, all of them:

    - ``metadata`` (whether it is a mapping), ``metadata.labels`` (``gpu.kgm.io/team``,
      ``gpu.kgm.io/gpu-profile``, and whether the map exists, for the patch);
    - ``metadata.annotations``: ``gpu.kgm.io/memory-gb``, ``workload-type``, ``use-mig``, ``team``,
      ``user``, ``allocation-id``, ``placement-policy``, ``original-request``, ``mutated``, and every
      other annotation's key and value for their total size (the API server's 256 KiB limit);
    - ``spec.schedulerName``, ``spec.nodeSelector`` (``nvidia.com/gpu.product``), ``spec.affinity``
      (only for a pod pinned to its reservation's node);
    - every container and init container: ``name``, ``restartPolicy``, ``resources.limits`` and
      ``resources.requests`` (``spec.containers``, ``spec.initContainers``).

    An edited copy of a pod kgm mutated is judged from its user's first ask where it still carries
    it (``webhook/copies.py`` states the rule).
    """
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    annotations = _string_map(metadata.get("annotations"))
    labels = _string_map(metadata.get("labels"))
    containers = _gpu_containers(pod)
    if not isinstance(containers, tuple):
        return containers  # a denial
    if not containers:
        return Admit()  # not a GPU pod: none of our business
    if unknown_policy := _unknown_policy(annotations.get(PLACEMENT_POLICY)):
        return unknown_policy  # before the fingerprint: an edited copy must not slip through
    spec = pod["spec"]  # container_gpus found containers, so spec is a mapping
    scheduler = spec.get("schedulerName")
    routed = settings.scheduler_name if scheduler in (None, *_DEFAULT_SCHEDULERS) else scheduler
    if annotations.get(MUTATED) == fingerprint(containers, annotations, scheduler=routed):
        # Judged before. If a later webhook put the default scheduler back (reinvocation), route
        # the pod again, and nothing else: the rest of what the first pass wrote stays.
        return Admit() if routed == scheduler else Admit(patch=[_route(settings)])

    try:
        intent = parse_intent(annotations)
    except IntentError as error:
        return Deny(message=str(error), code=422, reason="Invalid")
    product = strings_at(spec.get("nodeSelector"), "spec.nodeSelector").get(PRODUCT_LABEL)
    current = containers
    containers = first_asks(current, annotations, labels)
    if refusal := _refusal(containers, intent, offer, product, settings):
        return refusal

    held = _reservation(annotations.get(ALLOCATION_ID), namespace, reservation)
    if isinstance(held, Deny):
        return held
    target, fallback = _mig_choice(containers, intent, offer, product)
    if held is not None:
        target, fallback = _reserved_target(held, offer), None
    final = _moves(containers, target)
    changed = [(now, then) for now, then in zip(current, final, strict=True) if now != then]
    total = pod_gpu_total(final)
    if held is not None and dict(total) != {held.resource: held.count}:
        asked = ", ".join(f"{n} x {r}" for r, n in sorted(total.items()))
        return Deny(
            message=f"the pod asks for {asked}; reservation {held.id} holds {held.count} x {held.resource}",
            code=403,
            reason="Forbidden",
        )
    cost = (
        held.hourly_price * held.count
        if held is not None
        else _hourly_cost(total, offer, product, intent.memory_gb)
    )
    warnings = _moved_warnings(changed) + mig_smaller_than_asked(total, intent.memory_gb)
    warnings += [] if cost is not None else [_UNPRICED]

    wanted_labels = {
        TEAM: intent.team or labels.get(TEAM) or namespace,
        WORKLOAD_TYPE: intent.workload_type.value,
        GPU_PROFILE: _profile_label(total),
    }
    wanted_annotations = {ORIGINAL_REQUEST: _original_request(containers)}
    if cost is not None:
        wanted_annotations[COST_PER_HOUR] = f"{cost:.4f}"
    if fallback:
        wanted_annotations[MIG_FALLBACK] = fallback
    wanted_annotations[MUTATED] = fingerprint(final, annotations, scheduler=routed)
    if too_long := _annotations_too_long(metadata.get("annotations"), wanted_annotations, len(containers)):
        return too_long

    patch = [op for now, then in changed for op in _rewrite(pod, now, then)]
    patch += set_entries("/metadata/labels", metadata.get("labels"), wanted_labels)
    patch += set_entries("/metadata/annotations", metadata.get("annotations"), wanted_annotations)
    if held is not None and held.node:
        patch += pin_to_node(spec, held.node)
    if routed != scheduler:
        patch.append(_route(settings))
    if not isinstance(pod.get("metadata"), Mapping):
        patch.insert(0, {"op": "add", "path": "/metadata", "value": {}})
    return Admit(patch=patch, warnings=[brief(warning) for warning in warnings])


def _gpu_containers(pod: Mapping[str, Any]) -> tuple[ContainerGpus, ...] | Deny:
    """The pod's GPU containers, or the denial the API server would give a pod we cannot read or the
    pod we would produce."""
    try:
        containers = container_gpus(pod, strict=True, most=MAX_GPU_CONTAINERS)
        if containers:  # what else of a GPU pod is read as it is (the product wanted)
            strings_at(pod["spec"].get("nodeSelector"), "spec.nodeSelector")
        return containers
    except TooManyGpuContainersError as error:
        return Deny(message=f"{error}: {_TOO_LONG}", code=422, reason="Invalid")
    except InvalidPodError as error:  # what the API server's validation refuses, said first
        return Deny(message=str(error), code=422, reason="Invalid")
    except PodError as error:
        return Deny(message=str(error), code=400, reason="BadRequest")


def fingerprint(
    containers: tuple[ContainerGpus, ...], annotations: Mapping[str, str], *, scheduler: str
) -> str:
    """A digest of the pod we produce: what the decision depends on and the scheduler it routes to.

    If someone later edits the GPU request or our annotations (a copied manifest, a reinvocation
    after another webhook), the digest no longer matches and the pod is judged afresh; if a later
    webhook puts the default scheduler back, the pod is routed again.
    """
    state = {
        "containers": [[c.kind, c.index, c.name, dict(sorted(c.resources.items()))] for c in containers],
        "intent": {key: annotations.get(key) for key in _INTENT_KEYS},
        "scheduler": scheduler,
    }
    return "v2-" + hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


_UNPRICED = "kgm: no node offers what this pod asks for; cost per hour unknown"


def _route(settings: WebhookSettings) -> PatchOp:
    return {"op": "add", "path": "/spec/schedulerName", "value": settings.scheduler_name}


#: Warnings and reasons name at most this many containers: the API server keeps only the first few
#: KB of warnings, and the annotations of a pod hold 256 KiB in all.
_NAMED_CONTAINERS = 8
#: apimachinery's TotalAnnotationSizeLimitB: the most a pod's annotations (keys and values) may hold.
ANNOTATIONS_LIMIT_BYTES = 256 * 1024
#: Each GPU container takes at least 27 bytes of ``original-request`` (``"a":{"nvidia.com/gpu":"1"},``):
#: past this many, the pod we would produce is one the API server refuses, so reading stops there
#: (a 3 MiB review holds some 50,000 containers; judging them all blocked the event loop for seconds).
MAX_GPU_CONTAINERS = ANNOTATIONS_LIMIT_BYTES // 27
_TOO_LONG = (
    f"{ORIGINAL_REQUEST} would take the pod's annotations past the {ANNOTATIONS_LIMIT_BYTES} bytes "
    "Kubernetes allows; split the work into several pods"
)


def _annotations_too_long(current: object, wanted: Mapping[str, str], containers: int) -> Deny | None:
    """A denial when our annotations take the pod past the API server's limit: it would refuse the
    pod we produce, in words about annotations the user never wrote. (A pod already past it is
    refused by the API server in its own words.)"""
    before = _string_map(current)
    size = _size({**before, **wanted})
    if size <= ANNOTATIONS_LIMIT_BYTES or _size(before) > ANNOTATIONS_LIMIT_BYTES:
        return None
    return Deny(
        message=f"metadata.annotations: Too long: with {ORIGINAL_REQUEST} for its {containers} GPU "
        f"containers the pod's annotations would take {size} bytes, more than the "
        f"{ANNOTATIONS_LIMIT_BYTES} Kubernetes allows; split the work into several pods",
        code=422,
        reason="Invalid",
    )


def _moved_warnings(changed: list[tuple[ContainerGpus, ContainerGpus]]) -> list[str]:
    warnings = [
        f"kgm: container {now.name} moved from {_named(now)} to {_named(then)}"
        for now, then in changed[:_NAMED_CONTAINERS]
    ]
    if len(changed) > _NAMED_CONTAINERS:
        now, then = changed[-1]
        warnings.append(
            f"kgm: {len(changed) - _NAMED_CONTAINERS} more containers moved (the last from {_named(now)} "
            f"to {_named(then)})"
        )
    return warnings


def _named(container: ContainerGpus) -> str:
    return ", ".join(container.resources)


def _refusal(
    containers: tuple[ContainerGpus, ...],
    intent: GpuIntent,
    offer: Offer,
    product: str | None,
    settings: WebhookSettings,
) -> Deny | None:
    if not offer.resources:
        return None  # an empty inventory (not yet read) must not turn every GPU pod away
    largest = offer.largest_gpu_memory_gb
    if intent.memory_gb is not None and intent.memory_gb > largest:
        return Deny(
            message=f"{MEMORY_GB}={intent.memory_gb} is more than any GPU in this cluster has; "
            f"the largest GPU offered has {largest} GB",
            code=422,
            reason="Invalid",
        )
    if settings.deny_unoffered_mig:
        for container in containers:
            for name in container.resources:
                if name.startswith(MIG_RESOURCE_PREFIX) and not offer.named(name, product):
                    where = f" on {product}" if product else ""
                    return Deny(
                        message=f"{name} is not offered by any node{where} in this cluster",
                        code=403,
                        reason="Forbidden",
                    )
    return None


def _mig_choice(
    containers: tuple[ContainerGpus, ...], intent: GpuIntent, offer: Offer, product: str | None
) -> tuple[OfferedResource | None, str | None]:
    """The MIG instance single-GPU containers move to, or why they keep their whole GPU."""
    if not wants_mig(use_mig=intent.use_mig, memory_gb=intent.memory_gb, workload_type=intent.workload_type):
        return None, None
    several = [c for c in containers if c.resources.get(FULL_GPU_RESOURCE, 0) > 1]
    reasons = [
        f"container {c.name} asks for {c.resources[FULL_GPU_RESOURCE]} GPUs; "
        "multi-GPU requests are never turned into MIG"
        for c in several[:_NAMED_CONTAINERS]
    ]
    if len(several) > _NAMED_CONTAINERS:
        reasons.append(f"{len(several) - _NAMED_CONTAINERS} more containers ask for several GPUs")
    target = None
    if any(_single_gpu(c) for c in containers):
        target = smallest_mig_fit(offer, intent.memory_gb, product)
        if target is None:
            reasons.insert(0, no_mig_fit_reason(offer, intent.memory_gb, product))
    return target, "; ".join(reasons) or None


def _reservation(
    allocation_id: str | None, namespace: str, lookup: Callable[[str], Allocation | None]
) -> Allocation | Deny | None:
    """The open reservation the pod claims, a denial if it claims one that is not open, or None."""
    if allocation_id is None:
        return None
    held = lookup(allocation_id)
    if held is None or held.status is not Status.RESERVED or held.namespace != namespace or not held.node:
        return Deny(
            message=f"{ALLOCATION_ID}={allocation_id} is not an open reservation in namespace {namespace}; "
            "reserve through POST /api/v1/gpu/allocations or a GpuAllocation first",
            code=403,
            reason="Forbidden",
        )
    return held


def _moves(
    containers: tuple[ContainerGpus, ...], target: OfferedResource | None
) -> tuple[ContainerGpus, ...]:
    """Every container as it will be: single whole GPUs moved to ``target``.

    One pass: a pod may carry thousands of containers (a membership test over the moved ones for
    each container made admission quadratic: 10,000 containers took 7 s).
    """
    if target is None:
        return containers
    resources = {target.resource_name: 1}
    return tuple(replace(c, resources=resources) if _single_gpu(c) else c for c in containers)


def _unknown_policy(policy: str | None) -> Deny | None:
    """A denial for a placement policy the extender does not know: it would use its default silently."""
    if policy is None or policy in PLACEMENT_POLICIES:
        return None
    return Deny(
        message=f"{PLACEMENT_POLICY}={policy[:63]!r} is not a placement policy; "
        f"allowed: {', '.join(PLACEMENT_POLICIES)}",
        code=422,
        reason="Invalid",
    )


def _size(annotations: Mapping[str, str]) -> int:
    """Bytes of keys and values, as apimachinery's ValidateAnnotationsSize counts them."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())


def _reserved_target(held: Allocation, offer: Offer) -> OfferedResource | None:
    """What single-GPU containers move to for a reservation: its resource (None: whole GPUs stay)."""
    if held.resource == FULL_GPU_RESOURCE:
        return None
    found = offer.named(held.resource)
    return found[0] if found else None


def _single_gpu(container: ContainerGpus) -> bool:
    return dict(container.resources) == {FULL_GPU_RESOURCE: 1}


def _rewrite(pod: Mapping[str, Any], now: ContainerGpus, then: ContainerGpus) -> list[PatchOp]:
    """Operations that turn the container's one GPU resource (``now``) into ``then``'s: a whole GPU
    into a MIG instance, or, in an edited copy, kgm's earlier MIG instance into another or back."""
    ((old, _),) = now.resources.items()
    ((new, _),) = then.resources.items()
    resources = pod["spec"][now.kind][now.index]["resources"]
    ops: list[PatchOp] = []
    for section in ("limits", "requests"):
        values = resources.get(section)
        if isinstance(values, Mapping) and old in values:
            path = f"/spec/{now.kind}/{now.index}/resources/{section}"
            ops += replace_key(path, values, old, new, "1")
    return ops


def _hourly_cost(
    total: Mapping[str, int], offer: Offer, product: str | None, memory_gb: Decimal | None
) -> Decimal | None:
    cost = Decimal(0)
    for name, count in total.items():
        price = hourly_price(
            offer, name, product=product, memory_gb=memory_gb if name == FULL_GPU_RESOURCE else None
        )
        if price is None:
            return None
        cost += price * count
    return cost


def _profile_label(total: Mapping[str, int]) -> str:
    if set(total) == {FULL_GPU_RESOURCE}:
        return "gpu"
    if len(total) == 1:
        return next(iter(total)).removeprefix(RESOURCE_PREFIX)
    return "mixed"


def _original_request(containers: tuple[ContainerGpus, ...]) -> str:
    asked: dict[str, dict[str, dict[str, str]]] = {}
    for container in containers:
        resources = {name: str(count) for name, count in sorted(container.resources.items())}
        asked.setdefault(container.kind, {})[container.name] = resources
    return orjson.dumps(asked).decode()


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
