"""``POST /mutate``'s handler: parse the review, call the core, serialize the answer.

The HTTP edge (method, bounded read, metrics, log line, catch-all) is ``kgm.web``'s
``JsonEndpoint``; this says what to answer, the ``kgm_admission_requests`` labels (operation,
outcome) and the log lines. A review we cannot read gets HTTP 400; a failure inside still gets the API
server a well-formed review (a denial), never a 500 or a hang.

Log lines: a denial at info, a mutation at debug (one JSON line formatted and written per GPU pod
created, on the pod's path: issue 15 took it off info), an unchanged pod none; errors at error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from starlette.types import Scope

from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from inventory.domain.quota import QuotaChecker
from webhook import admission
from webhook.admission import Outcome
from webhook.memo import DecisionMemo
from webhook.review import AdmissionRequest, BadReviewError, decode_review, denied
from webhook.settings import WebhookSettings

LogLine = tuple[str, tuple[object, ...], Mapping[str, object]]
_FAILED = "the GPU admission webhook failed on this pod; see its logs"
#: The operations of ``admission.k8s.io/v1``. A label value lives in memory and on /metrics for as long
#: as the process does, so the caller never chooses one: any other operation is counted as ``other``.
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def operation_label(operation: str) -> str:
    return operation if operation in OPERATIONS else "other"


#: The counter's labels of every judged review, built once (a tuple and an enum's value per review
#: otherwise); an operation outside ``OPERATIONS`` is not in it.
_LABELS = {(op, outcome): (op, outcome.value) for op in OPERATIONS for outcome in Outcome}
# Every pod create that needs nothing from us is UNCHANGED: those are many and say nothing (no line).
# A mutation is the webhook working as it should: debug. A denial is what someone must read: info.
_LEVELS = {Outcome.UNCHANGED: 0, Outcome.MUTATED: logging.DEBUG, Outcome.DENIED: logging.INFO}


@dataclass(slots=True)
class Reviewed:
    """A review answered: allowed as it is, mutated or denied. One is built per review: slots, no dict,
    not frozen (never changed: a frozen dataclass's __init__ costs 0.6 us more)."""

    request: AdmissionRequest
    result: admission.Answer

    # What every answer of the service has in common: plain class attributes, not per-tuple fields.
    status: ClassVar[int] = 200
    message: ClassVar[str] = ""
    headers: ClassVar[Sequence[tuple[bytes, bytes]]] = ()
    timed: ClassVar[bool] = True

    @property
    def body(self) -> bytes:
        return self.result.body

    @property
    def labels(self) -> tuple[str, str]:
        outcome = self.result.outcome
        return _LABELS.get((self.request.operation, outcome)) or ("other", outcome.value)

    @property
    def level(self) -> int:
        return _LEVELS[self.result.outcome]

    def line(self, seconds: float) -> LogLine:
        request, result = self.request, self.result
        extra = {
            "event": f"admission.{result.outcome.value}",
            "uid": request.uid,
            "namespace": request.namespace,
            "pod": _pod_name(request),
            "dry_run": request.dry_run,
            **({"reason": result.message} if result.message else {}),
        }
        return "pod %s", (result.outcome.value,), extra


@dataclass(frozen=True, slots=True)
class Refused:
    """A review not judged: unreadable (400), refused at the edge (405, 413, 408), or failed inside."""

    status: int
    message: str
    labels: tuple[str, str] = ("", "bad_request")
    body: bytes | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()
    level: int = logging.WARNING

    @property
    def timed(self) -> bool:
        return False

    def line(self, seconds: float) -> LogLine:
        return self.message, (), {"event": "admission.bad_request", "status": self.status}


class Admission:
    """The core behind ``/mutate``: the offer of free GPUs, the settings, the reservations to pin to."""

    methods = frozenset({"POST"})
    blocking = False  # CPU-only, on every pod's path

    def __init__(
        self,
        *,
        offer: Callable[[], Offer],
        settings: WebhookSettings,
        reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
        memo: DecisionMemo | None = None,
        quota: QuotaChecker | None = None,
    ) -> None:
        """``memo``: where decisions are remembered (:mod:`webhook.memo`); None: every pod decided afresh."""
        self._offer = offer
        self._settings = settings
        self._reservation = reservation
        self.memo = memo
        self._quota = quota  # GPU quotas (webhook.quota), judged on the pod as mutated

    def check(self, scope: Scope) -> None:
        return None

    def rejected(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Refused:
        return Refused(status, message, headers=headers)

    def parse(self, scope: Scope, body: bytes) -> AdmissionRequest:
        return decode_review(body)

    def answer(self, request: AdmissionRequest) -> Reviewed:
        result = admission.answer(
            request, self._offer(), self._settings, self._reservation, self.memo, quota=self._quota
        )
        return Reviewed(request, result)

    def failed(
        self, scope: Scope, request: AdmissionRequest | None, error: Exception
    ) -> tuple[Refused, LogLine | None]:
        if isinstance(
            error, BadReviewError
        ):  # also when the typed decoding read it and the pod did not parse
            return Refused(400, str(error)), None
        extra = {"event": "admission.error", "uid": request.uid if request else None, "error": repr(error)}
        if request is None:  # not even the review was read: there is no uid to answer
            return Refused(500, _FAILED, ("", "error"), level=0), ("admission failed", (), extra)
        body = denied(request.uid, _FAILED, code=500, reason="InternalError")
        return Refused(200, _FAILED, (operation_label(request.operation), "error"), body, level=0), (
            "admission failed",
            (),
            extra,
        )


def _pod_name(request: AdmissionRequest) -> object:
    """The pod's name (or generateName) for a log line; None if the review's pod cannot be read."""
    try:
        pod = request.object or {}
    except BadReviewError:
        return None
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    return (metadata or {}).get("name") or (metadata or {}).get("generateName")
