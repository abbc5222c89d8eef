"""``POST /mutate``: read the review, call the core, write the answer.

A plain ASGI callable rather than a Starlette request handler: it must bound what it reads (size and
time) before anything parses it, and it answers every failure itself so the API server never sees
a 500 or waits on a hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from inventory.asgi import BodyTooLargeError, error_body, read_body, send_json
from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from webhook.admission import Outcome, answer
from webhook.metrics import AdmissionMetrics
from webhook.review import BadReviewError, denied, parse_review
from webhook.settings import WebhookSettings


class MutateEndpoint:
    def __init__(
        self,
        *,
        offer: Callable[[], Offer],
        settings: WebhookSettings,
        metrics: AdmissionMetrics,
        logger: logging.Logger,
        read_timeout: float = 10.0,
        reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
    ) -> None:
        self._offer = offer
        self._reservation = reservation
        self._settings = settings
        self._metrics = metrics
        self._logger = logger
        self._read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_json(
                send, 405, error_body(405, "use POST with an AdmissionReview body"), [(b"allow", b"POST")]
            )
            return
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await read_body(scope, receive, self._settings.max_body_bytes)
        except BodyTooLargeError:
            limit = self._settings.max_body_bytes
            await self._reject(send, 413, f"AdmissionReview larger than {limit} bytes")
            return
        except TimeoutError:
            await self._reject(send, 408, f"AdmissionReview body not received within {self._read_timeout} s")
            return

        started = time.perf_counter()
        try:
            request = parse_review(body)
        except BadReviewError as error:
            await self._reject(send, 400, str(error))
            return
        try:
            result = answer(request, self._offer(), self._settings, self._reservation)
        except Exception as error:  # a bug must still get the API server a well-formed answer
            self._logger.exception(
                "admission failed",
                extra={"event": "admission.error", "uid": request.uid, "error": repr(error)},
            )
            self._metrics.requests.labels(request.operation, "error").inc()
            message = "the GPU admission webhook failed on this pod; see its logs"
            await send_json(send, 200, denied(request.uid, message, code=500, reason="InternalError"))
            return
        self._metrics.latency.observe(time.perf_counter() - started)
        self._metrics.requests.labels(request.operation, result.outcome.value).inc()
        if result.outcome is not Outcome.UNCHANGED:
            pod = request.object or {}
            metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
            self._logger.info(
                "pod %s",
                result.outcome.value,
                extra={
                    "event": f"admission.{result.outcome.value}",
                    "uid": request.uid,
                    "namespace": request.namespace,
                    "pod": (metadata or {}).get("name") or (metadata or {}).get("generateName"),
                    "dry_run": request.dry_run,
                    **({"reason": result.message} if result.message else {}),
                },
            )
        await send_json(send, 200, result.body)

    async def _reject(self, send: Send, status: int, message: str) -> None:
        self._metrics.requests.labels("", "bad_request").inc()
        self._logger.warning(message, extra={"event": "admission.bad_request", "status": status})
        await send_json(send, status, error_body(status, message))
