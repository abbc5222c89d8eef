"""From a parsed AdmissionRequest to the serialized review the API server gets back (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from webhook.mutation import Admit, mutate_pod
from webhook.review import AdmissionRequest, allowed, denied
from webhook.settings import WebhookSettings


class Outcome(StrEnum):
    MUTATED = "mutated"
    UNCHANGED = "unchanged"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    body: bytes
    message: str = ""


def answer(
    request: AdmissionRequest,
    offer: Offer,
    settings: WebhookSettings,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
) -> Answer:
    """Pod CREATEs are judged; every other request is allowed as it is."""
    if not request.is_pod_create:
        return Answer(Outcome.UNCHANGED, allowed(request.uid))
    if request.object is None:
        message = "the review of a Pod CREATE carries no pod object"
        return Answer(Outcome.DENIED, denied(request.uid, message, code=400, reason="BadRequest"), message)
    decision = mutate_pod(
        request.object, namespace=request.namespace, offer=offer, settings=settings, reservation=reservation
    )
    if isinstance(decision, Admit):
        outcome = Outcome.MUTATED if decision.patch else Outcome.UNCHANGED
        return Answer(outcome, allowed(request.uid, decision.patch, decision.warnings))
    body = denied(request.uid, decision.message, code=decision.code, reason=decision.reason)
    return Answer(Outcome.DENIED, body, decision.message)
