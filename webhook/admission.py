"""From a parsed AdmissionRequest to the serialized review the API server gets back (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inventory.domain.allocation import Allocation, Status
from inventory.domain.labels import ALLOCATION_ID
from inventory.domain.offer import Offer
from inventory.domain.quota import QuotaChecker
from webhook.memo import Decided, DecisionMemo
from webhook.mutation import Admit, mutate_pod
from webhook.quota import QuotaFacts
from webhook.quota import judge as quota_judge
from webhook.review import AdmissionRequest, allowed, denied
from webhook.settings import WebhookSettings


class Outcome(StrEnum):
    MUTATED = "mutated"
    UNCHANGED = "unchanged"
    DENIED = "denied"


# Not frozen, never changed: a frozen dataclass's __init__ costs 0.6 us more, one per review.
@dataclass(slots=True)
class Answer:
    outcome: Outcome
    body: bytes
    message: str = ""


def answer(
    request: AdmissionRequest,
    offer: Offer,
    settings: WebhookSettings,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
    memo: DecisionMemo | None = None,
    quota: QuotaChecker | None = None,
) -> Answer:
    """Pod CREATEs are judged; a Pod UPDATE only for its claim of a reservation (set at creation, when
    the pod is pinned to the reserved node, never after); every other request is allowed as it is.

    ``memo``: where the mutation's decision may come from (:mod:`webhook.memo`); only the decision:
    what is checked per request stays here, outside it."""
    if request.is_pod_update:
        before, after = _claim(request.old_object), _claim(request.object)
        if before == after:
            return Answer(Outcome.UNCHANGED, allowed(request.uid))
        message = f"{ALLOCATION_ID} is set when a pod is created and never changes ({before!r} -> {after!r})"
        return Answer(Outcome.DENIED, denied(request.uid, message, code=403, reason="Forbidden"), message)
    if not request.is_pod_create:
        return Answer(Outcome.UNCHANGED, allowed(request.uid))
    if not request.has_object:
        message = "the review of a Pod CREATE carries no pod object"
        return Answer(Outcome.DENIED, denied(request.uid, message, code=400, reason="BadRequest"), message)
    stranger = None
    if request.may_claim:  # most pods' typed view shows no claim: their dict is never built
        stranger = _not_its_reservation(request.object or {}, request.namespace, reservation)
    if stranger is not None:
        return Answer(Outcome.DENIED, denied(request.uid, stranger, code=403, reason="Forbidden"), stranger)
    counted = _quotas_count(quota)  # once per review: the book's quotas come and go
    if memo is None:
        decided = Decided.of(
            mutate_pod(
                request.object or {},
                namespace=request.namespace,
                offer=offer,
                settings=settings,
                reservation=reservation,
            )
        )
    else:
        decided = memo.decide(
            None if request.may_claim else request.pod,  # a reservation changes by itself: never memoized
            namespace=request.namespace,
            offer=offer,
            settings=settings,
            reservation=reservation,
            whole_pod=lambda: request.object,
            quota=counted,
        )
    if counted and decided.admitted:  # GPU quotas judge the pod as mutated
        learned = decided.quota
        if learned is not None and not learned.fresh:  # the judge as the memo's entry learned it
            assert quota is not None
            return _counted(request, decided, learned, quota)
        decision = decided.decision
        assert isinstance(decision, Admit)
        # the fields the mutation reads are all the quota reads: the typed view, not the whole pod
        pod = request.pod.decision_input() if request.pod is not None else request.object or {}
        judged = quota_judge(
            pod, decision, uid=request.uid, namespace=request.namespace, dry_run=request.dry_run, check=quota
        )
        if judged is not decision:
            decided = Decided.of(judged)
    if decided.admitted:
        outcome = Outcome.MUTATED if decided.patched else Outcome.UNCHANGED
        return Answer(outcome, decided.body(request.uid))
    return Answer(Outcome.DENIED, decided.body(request.uid), decided.message)


def _counted(request: AdmissionRequest, decided: Decided, view: QuotaFacts, quota: QuotaChecker) -> Answer:
    """``webhook.quota.judge``'s answer from what a memo entry learned of it: per request only the uid,
    dryRun and the check against the quotas (tests/webhook/test_memo.py: the same bytes)."""
    uid, dry_run = request.uid, request.dry_run
    if view.ask is not None:
        refusals = quota(view.asked(uid, dry_run))
        if refusals:
            message = "; ".join(r.message for r in refusals)
            return Answer(Outcome.DENIED, denied(uid, message, code=403, reason="Forbidden"), message)
        if view.marks(uid, dry_run):
            return Answer(Outcome.MUTATED, view.marked(uid))
    return Answer(Outcome.MUTATED if decided.patched else Outcome.UNCHANGED, decided.body(uid))


def _quotas_count(quota: QuotaChecker | None) -> bool:
    """Whether a quota may count the pod: with none known (``QuotaBook.active``), the whole pod is not
    even parsed out of the review (a memo hit never builds it otherwise)."""
    active = getattr(quota, "active", None)
    return quota is not None and (active is None or bool(active()))


def _claim(pod: Mapping[str, Any] | None) -> object:
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations.get(ALLOCATION_ID) if isinstance(annotations, Mapping) else None


def _not_its_reservation(
    pod: Mapping[str, Any], namespace: str, lookup: Callable[[str], Allocation | None]
) -> str | None:
    """Why the pod may not claim the reservation it names: it is another pod's of this namespace. (One
    that is not an open reservation of this namespace at all is refused by the mutation, in its words.)"""
    allocation_id = _claim(pod)
    if not isinstance(allocation_id, str):
        return None
    held = lookup(allocation_id)
    if held is None or held.status is not Status.RESERVED or held.namespace != namespace or not held.pod:
        return None
    metadata = pod.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if name == held.pod:
        return None
    shown = repr(name[:253]) if isinstance(name, str) and name else "a pod named by generateName"
    return (
        f"reservation {allocation_id} is for pod {namespace}/{held.pod}, not {shown}: only that pod claims it"
    )
