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
    if check is None:
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


def patched(document: Mapping[str, Any], ops: Sequence[PatchOp]) -> Mapping[str, Any]:
    """``document`` with the RFC 6902 ``add``/``replace``/``remove`` operations the mutation builds
    applied, copying only the objects on each operation's path (a pod may hold thousands of containers;
    the review's object is left as it is)."""
    result: Any = document
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        result = _apply(result, parts, op["op"], op.get("value"))
    return result  # type: ignore[no-any-return]


def _apply(node: Any, parts: list[str], op: str, value: Any) -> Any:
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        copy = dict(node)
        if rest:
            copy[head] = _apply(copy.get(head), rest, op, value)
        elif op == "remove":
            copy.pop(head, None)
        else:
            copy[head] = value
        return copy
    if isinstance(node, list):
        copy_list = list(node)
        if not rest and head == "-":
            copy_list.append(value)
            return copy_list
        index = int(head)
        if rest:
            copy_list[index] = _apply(copy_list[index], rest, op, value)
        elif op == "remove":
            del copy_list[index]
        elif op == "add":
            copy_list.insert(index, value)
        else:
            copy_list[index] = value
        return copy_list
    raise ValueError(f"patch path through a {type(node).__name__}")  # never for a patch built against the pod


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
