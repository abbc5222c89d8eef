"""``POST /extender/{filter,prioritize,bind,preempt}``: parse the call, call the service, write the reply.

Plain ASGI callables, like ``webhook.app.MutateEndpoint``: each bounds what it reads (size and time)
before anything parses it, and answers every failure itself. kube-scheduler treats any status but 200
as a failed call, so extender-protocol errors go in the reply's ``Error`` with a 200 and it reports them
on the pod; only bodies that are not JSON objects at all get a 400.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from extender import wire
from extender.service import ExtenderService
from inventory.asgi import BodyTooLargeError, error_body, read_body, send_json

# kube-scheduler waits on the extender inside every scheduling cycle: sub-millisecond to its timeout.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Call(Protocol):
    @property
    def pod_ref(self) -> str: ...


Call = TypeVar("Call", bound=_Call)


@dataclass(frozen=True, slots=True)
class ExtenderMetrics:
    requests: Counter
    latency: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ExtenderMetrics:
        return cls(
            requests=Counter(
                "kgm_extender_requests",
                "Extender calls answered, by verb and outcome (ok, refused, invalid, bad_request, error).",
                ["verb", "outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "kgm_extender_duration_seconds",
                "Time from a call's last byte to its reply.",
                ["verb"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    outcome: str  # ok, or refused (the service said no: a failed bind)
    log: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verb(Generic[Call]):
    """One verb: how to parse its call, answer it through the service, and write its errors."""

    name: str
    parse: Callable[[bytes], Call]
    answer: Callable[[ExtenderService, Call], Reply]
    #: The verb's reply carrying only ``Error``; None where the reply has no Error field (prioritize).
    error: Callable[[str], bytes] | None
    #: Run the service in a worker thread: it waits on the API server (bind), the loop must not.
    blocking: bool = False


def _filter(service: ExtenderService, call: wire.ExtenderCall) -> Reply:
    outcome = service.filter(call.pod, call.node_names)
    log = {"nodes": len(call.node_names), "passed": len(outcome.passed)}
    return Reply(wire.filter_result(call, outcome), "ok", log)


def _prioritize(service: ExtenderService, call: wire.ExtenderCall) -> Reply:
    scores = service.prioritize(call.pod, call.node_names)
    return Reply(wire.prioritize_result(scores), "ok", {"nodes": len(call.node_names), "scored": len(scores)})


def _bind(service: ExtenderService, call: wire.BindingCall) -> Reply:
    error = service.bind(namespace=call.namespace, name=call.name, uid=call.uid, node=call.node)
    log = {"node": call.node, "uid": call.uid, **({"error": error} if error else {})}
    return Reply(wire.binding_result(error), "refused" if error else "ok", log)


def _preempt(service: ExtenderService, call: wire.PreemptionCall) -> Reply:
    victims = service.preempt(call.pod, call.victims)
    log = {"candidates": len(call.victims), "kept": sorted(victims)}
    return Reply(wire.preemption_result(victims), "ok", log)


VERBS: tuple[Verb[Any], ...] = (
    Verb("filter", wire.parse_extender_args, _filter, lambda message: wire.filter_error(None, message)),
    # The reply is a bare HostPriorityList with no Error field: errors go out as HTTP 400/500, which
    # kube-scheduler logs and treats as "no score from this extender" (prioritizeNodes ignores
    # extender errors), so the pod still schedules on the other scores.
    Verb("prioritize", wire.parse_extender_args, _prioritize, None),
    Verb("bind", wire.parse_binding_args, _bind, wire.binding_result, blocking=True),
    # ExtenderPreemptionResult has no Error field: the error reply is an empty victims map (no eviction).
    Verb("preempt", wire.parse_preemption_args, _preempt, wire.preemption_error),
)


class ExtenderEndpoint(Generic[Call]):
    def __init__(
        self,
        verb: Verb[Call],
        *,
        service: ExtenderService,
        logger: logging.Logger,
        metrics: ExtenderMetrics | None,
        max_body_bytes: int,
        read_timeout: float,
    ) -> None:
        self._verb = verb
        self._service = service
        self._logger = logger
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        verb = self._verb
        if scope["method"] != "POST":
            await self._fail(send, 405, f"use POST with the {verb.name} call as body", [(b"allow", b"POST")])
            return
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await read_body(scope, receive, self._max_body_bytes)
        except BodyTooLargeError:
            await self._fail(send, 413, f"{verb.name} call larger than {self._max_body_bytes} bytes")
            return
        except TimeoutError:
            await self._fail(send, 408, f"{verb.name} call not received within {self._read_timeout} s")
            return

        started = time.perf_counter()
        try:
            call = verb.parse(body)
        except wire.MalformedBodyError as error:
            await self._fail(send, 400, str(error))
            return
        except wire.WireError as error:
            self._logger.warning(str(error), extra={"event": "extender.invalid", "verb": verb.name})
            await self._answer(send, "invalid", started, self._error_reply(str(error), 400))
            return
        pod = call.pod_ref
        try:
            if verb.blocking:
                reply = await asyncio.to_thread(verb.answer, self._service, call)
            else:  # filter and prioritize are CPU-only and on every pod's path: no thread hop
                reply = verb.answer(self._service, call)
        except Exception:  # a bug must still get kube-scheduler a well-formed answer
            self._logger.exception(
                "%s failed", verb.name, extra={"event": "extender.error", "verb": verb.name, "pod": pod}
            )
            await self._answer(send, "error", started, self._error_reply(wire.INTERNAL_ERROR, 500))
            return
        level = logging.INFO if verb.name == "bind" else logging.DEBUG
        if reply.outcome != "ok":
            level = logging.WARNING
        if self._logger.isEnabledFor(level):  # the extra dict is not built for a disabled debug line
            extra = {"event": f"extender.{verb.name}", "verb": verb.name, "pod": pod, **reply.log}
            self._logger.log(level, "%s %s: %s", verb.name, pod, reply.outcome, extra=extra)
        await self._answer(send, reply.outcome, started, (200, reply.body))

    def _error_reply(self, message: str, status_without_error_field: int) -> tuple[int, bytes]:
        if self._verb.error is None:
            return status_without_error_field, error_body(status_without_error_field, message)
        return 200, self._verb.error(message)

    async def _answer(self, send: Send, outcome: str, started: float, answer: tuple[int, bytes]) -> None:
        if self._metrics is not None:
            self._metrics.latency.labels(self._verb.name).observe(time.perf_counter() - started)
            self._metrics.requests.labels(self._verb.name, outcome).inc()
        await send_json(send, *answer)

    async def _fail(
        self, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        if self._metrics is not None:
            self._metrics.requests.labels(self._verb.name, "bad_request").inc()
        self._logger.warning(
            message, extra={"event": "extender.bad_request", "verb": self._verb.name, "status": status}
        )
        await send_json(send, status, error_body(status, message), headers)


def routes(
    service: ExtenderService,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    read_timeout: float = 10.0,
    logger: logging.Logger | None = None,
    registry: CollectorRegistry | None = None,
) -> list[Route]:
    """``/extender/<verb>`` for the four verbs, to mount in ``kgm.server.build_app``.

    No ``methods=`` on the routes: the endpoints answer other methods with a JSON 405 themselves.
    """
    metrics = ExtenderMetrics.register(registry) if registry is not None else None
    log = logger or logging.getLogger("kgm.extender")
    return [
        Route(
            f"/extender/{verb.name}",
            ExtenderEndpoint(
                verb,
                service=service,
                logger=log,
                metrics=metrics,
                max_body_bytes=max_body_bytes,
                read_timeout=read_timeout,
            ),
        )
        for verb in VERBS
    ]


def build_extender_app(
    service: ExtenderService,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    read_timeout: float = 10.0,
    logger: logging.Logger | None = None,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The extender alone, as an ASGI app (tests, or a process that serves only the extender)."""
    return Starlette(
        routes=routes(
            service,
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            logger=logger,
            registry=registry,
        )
    )
