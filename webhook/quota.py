"""Quotas at admission: the pod as the mutation leaves it, judged against the GPU quotas over it.

Runs after the mutation decision, on the pod the patch produces: a ResourceQuota line on
``requests.nvidia.com/gpu`` must still bite after ``nvidia.com/gpu`` became ``nvidia.com/mig-3g.40gb``,
and the team is the label the webhook writes. The checker (``inventory.live.quotas.QuotaBook.admit``)
judges and holds in one step; an admitted pod is marked with the admission's id
(``gpu.kgm.io/quota-admission``) so that its hold is dropped once the pod itself is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inventory.domain.labels import ALLOCATION_ID, QUOTA_ADMISSION
from inventory.domain.pods import container_gpus, pod_gpu_total
from inventory.domain.quota import QuotaAsk, QuotaChecker, pod_team
from webhook.mutation import Admit, Deny
from webhook.patch import PatchOp, set_entries


def judge(
    pod: Mapping[str, Any],
    decision: Admit,
    *,
    uid: str,
    namespace: str,
    dry_run: bool,
    check: QuotaChecker | None,
) -> Admit | Deny:
    """``decision`` as it is, with the admission's mark added when the pod is held against a quota, or
    a denial naming each quota the pod would take past a limit."""
    active = getattr(check, "active", None)  # a QuotaBook says when it knows no quota at all
    if check is None or (active is not None and not active()):
        return decision
    final = patched(pod, decision.patch) if decision.patch else pod
    resources = pod_gpu_total(container_gpus(final))
    if not resources:
        return decision  # not a GPU pod (the mutation has read it strictly already)
    annotations = _annotations(final)
    claimed = annotations.get(ALLOCATION_ID)
    ask = QuotaAsk(
        key=uid,
        namespace=namespace,
        team=pod_team(final),
        resources=resources,
        dry_run=dry_run,
        reservation=claimed if isinstance(claimed, str) else None,
        judged_as=_string(annotations.get(QUOTA_ADMISSION)),
    )
    refusals = check(ask)
    if refusals:
        return Deny(message="; ".join(r.message for r in refusals), code=403, reason="Forbidden")
    if dry_run or ask.reservation is not None:
        return decision
    # Marked with this admission even when the pod names an earlier one: a copied manifest's mark names
    # no hold of ours, and its pod must drop this admission's hold once it shows up. (A reinvocation
    # re-marked leaves the first pass's hold to lapse after its TTL: counted twice briefly, never less.)
    mark = set_entries("/metadata/annotations", final["metadata"].get("annotations"), {QUOTA_ADMISSION: uid})
    return Admit(patch=[*decision.patch, *mark], warnings=decision.warnings)


#: What the quota reads of the pod; the mutation's other operations (scheduler, affinity) are not applied.
_READ = ("/spec/containers/", "/spec/initContainers/", "/metadata")


def patched(document: Mapping[str, Any], ops: Sequence[PatchOp]) -> Mapping[str, Any]:
    """``document`` with the RFC 6902 ``add``/``replace``/``remove`` operations the mutation builds
    applied where the quota reads (containers' resources, labels, annotations), copying each object on
    an operation's path once (a pod may hold thousands of containers; the review's pod is left as it
    is)."""
    fresh: set[int] = set()  # ids of the copies made here: changed in place from then on
    result: Any = document
    for op in ops:
        path: str = op["path"]
        if not path.startswith(_READ):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        result = _apply(result, parts, op["op"], op.get("value"), fresh)
    return result  # type: ignore[no-any-return]


def _apply(node: Any, parts: list[str], op: str, value: Any, fresh: set[int]) -> Any:
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        copy: dict[str, Any] = node if id(node) in fresh and isinstance(node, dict) else dict(node)
        fresh.add(id(copy))
        if rest:
            copy[head] = _apply(copy.get(head), rest, op, value, fresh)
        elif op == "remove":
            copy.pop(head, None)
        else:
            copy[head] = value
        return copy
    if isinstance(node, list):
        items = node if id(node) in fresh else list(node)
        fresh.add(id(items))
        if not rest and head == "-":
            items.append(value)
            return items
        index = int(head)
        if rest:
            items[index] = _apply(items[index], rest, op, value, fresh)
        elif op == "remove":
            del items[index]
        elif op == "add":
            items.insert(index, value)
        else:
            items[index] = value
        return items
    raise ValueError(f"patch path through a {type(node).__name__}")  # never for a patch built against the pod


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
