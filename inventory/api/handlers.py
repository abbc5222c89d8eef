"""The REST API's routes: ``/api/v1/...`` for ``kgm serve``. Each handler parses, calls, serializes.

Plain ASGI endpoints, like the webhook's: one :class:`ApiEndpoint` per path answers every failure
itself in the project's error shape (405, 401/403, 413, 400, 404, 503, 500) instead of a framework
page. The handlers are plain functions of a parsed :class:`Call`; they run in a worker thread,
as the ledger and the reservation service wait on a database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from inventory.api import auth, openapi, serialize
from inventory.api.auth import Caller, Role, TokenStore
from inventory.api.serialize import BadRequestError
from inventory.asgi import BodyTooLargeError, error_body, read_body, send_json
from inventory.domain import cost
from inventory.domain.allocation import AllocationFilter, Status
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import InventorySnapshot
from inventory.ledger.store import Ledger, LedgerError
from inventory.reservations.request import RequestError, body_request
from inventory.reservations.service import ReservationRefusedError, ReservationService

MAX_BODY_BYTES = 64 * 1024
_INTERNAL = "internal error; the server's logs say more"
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="kgm"')


class NotFoundError(LookupError):
    """No such thing (404); the message says what was looked for."""


@dataclass(frozen=True, slots=True)
class Call:
    """A request as handlers see it: checked, authenticated, its body read."""

    method: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    caller: Caller | None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Call], Answer]


@dataclass(frozen=True, slots=True)
class ApiMetrics:
    requests: Counter
    latency: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ApiMetrics:
        return cls(
            requests=Counter(
                "kgm_api_requests",
                "REST API requests answered, by route and status.",
                ["route", "method", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "kgm_api_request_duration_seconds", "REST API time to answer.", ["route"], registry=registry
            ),
        )


@dataclass(frozen=True, slots=True)
class _Shared:
    tokens: TokenStore
    logger: logging.Logger
    metrics: ApiMetrics | None
    read_timeout: float = 10.0


class ApiEndpoint:
    """One path: its handler per method, and who may call it (None: anybody)."""

    def __init__(
        self, route: str, handlers: Mapping[str, Handler], roles: frozenset[Role] | None, shared: _Shared
    ) -> None:
        self._route = route
        self._handlers = handlers
        self._roles = roles
        self._shared = shared
        self._allow = ", ".join(sorted(handlers)).encode()

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._handlers)

    @property
    def roles(self) -> frozenset[Role] | None:
        return self._roles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        caller: Caller | None = None
        try:
            answer, caller = await self._answer(scope, receive)
        except Exception:
            self._shared.logger.exception(
                "API request failed",
                extra={"event": "api.error", "method": scope["method"], "path": scope["path"]},
            )
            answer = _error(500, _INTERNAL)
        await send_json(send, answer.status, orjson.dumps(answer.body), answer.headers)
        self._record(scope, answer.status, caller, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[Answer, Caller | None]:
        method = scope["method"]
        handler = self._handlers.get(method)
        if handler is None:
            message = f"{method} is not supported here; use {self._allow.decode()}"
            return _error(405, message, [(b"allow", self._allow)]), None
        caller = None
        if self._roles is not None:
            verdict = auth.authorize(self._shared.tokens, scope["headers"], self._roles, what=self._route)
            if isinstance(verdict, auth.Refusal):
                headers = [_WWW_AUTHENTICATE] if verdict.status == 401 else []
                return _error(verdict.status, verdict.message, headers), verdict.caller
            caller = verdict
        body = b""
        if method in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(self._shared.read_timeout):
                    body = await read_body(scope, receive, MAX_BODY_BYTES)
            except BodyTooLargeError:
                return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes"), caller
            except TimeoutError:
                return _error(408, f"the body did not arrive within {self._shared.read_timeout} s"), caller
        try:
            query = serialize.query_params(scope.get("query_string", b""))
            call = Call(method, scope.get("path_params", {}), query, body, caller)
            return await asyncio.to_thread(handler, call), caller
        except BadRequestError as error:
            return _error(400, str(error)), caller
        except NotFoundError as error:
            return _error(404, str(error)), caller
        except ReservationRefusedError as error:
            return _error(error.status, str(error)), caller
        except LedgerError:
            self._shared.logger.exception("ledger failed", extra={"event": "api.ledger_error"})
            return _error(503, "the allocation ledger is unavailable; try again later"), caller

    def _record(self, scope: Scope, status: int, caller: Caller | None, seconds: float) -> None:
        method = scope["method"]
        # Reads are many and routine; writes and refusals (who tried what) are worth keeping.
        level = logging.DEBUG if method in ("GET", "HEAD") and status not in (401, 403) else logging.INFO
        self._shared.logger.log(
            level,
            "%s %s %d",
            method,
            scope["path"],
            status,
            extra={
                "event": "api.request",
                "caller": caller.name if caller else None,
                "method": method,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
        if self._shared.metrics is not None:
            known = method if method in self._handlers else "other"  # callers choose methods: bound them
            self._shared.metrics.requests.labels(self._route, known, str(status)).inc()
            self._shared.metrics.latency.labels(self._route).observe(seconds)


class _NotFound:
    """Any other path under /api/v1: the error shape rather than a framework page."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 404, error_body(404, f"no such API path: {scope['path']}"))


def _error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    return Answer(status, {"error": {"code": status, "message": message}}, headers or [])


@dataclass(frozen=True, slots=True)
class GpuApi:
    """The handlers, over the core they call."""

    ledger: Ledger
    snapshot: Callable[[], InventorySnapshot]
    reservations: ReservationService
    prices: PriceTable
    clock: Callable[[], datetime]

    def health(self, call: Call) -> Answer:
        return Answer(200, {"data": {"status": "ok"}})

    def openapi(self, call: Call) -> Answer:
        return Answer(200, openapi.document())

    def devices(self, call: Call) -> Answer:
        return Answer(200, {"data": serialize.devices(self.snapshot(), call.query.get("nodeName"))})

    def list_allocations(self, call: Call) -> Answer:
        limit = serialize.int_param(call.query, "limit", default=100, low=1, high=500)
        status = call.query.get("status")
        if status is not None and status.lower() not in {s.value for s in Status}:
            raise BadRequestError(f"status must be one of {', '.join(Status)}, not {status[:40]!r}")
        where = AllocationFilter(
            namespace=call.query.get("namespace"),
            team=call.query.get("team"),
            status=Status(status.lower()) if status else None,
            node=call.query.get("nodeName"),
        )
        try:
            page = self.ledger.find(where, limit=limit, cursor=call.query.get("cursor"))
        except ValueError as error:  # a cursor the ledger did not hand out
            raise BadRequestError("cursor is not valid: pass back a nextCursor unchanged") from error
        now = self.clock()
        return Answer(
            200,
            {
                "data": [serialize.allocation(item, now) for item in page.items],
                "pagination": {"total": page.total, "limit": limit, "nextCursor": page.next_cursor},
            },
        )

    def get_allocation(self, call: Call) -> Answer:
        found = self.ledger.get(call.path_params["allocationId"])
        if found is None:
            raise NotFoundError(f"no allocation {call.path_params['allocationId']!r}")
        return Answer(200, {"data": serialize.allocation(found, self.clock())})

    def reserve(self, call: Call) -> Answer:
        try:
            body = orjson.loads(call.body)
        except orjson.JSONDecodeError as error:
            raise BadRequestError("the body is not JSON") from error
        try:
            request = body_request(body)
        except RequestError as error:
            raise BadRequestError(str(error)) from error
        made = self.reservations.reserve(request)
        location = f"/api/v1/gpu/allocations/{made.id}".encode()
        return Answer(201, {"data": serialize.reservation(made)}, [(b"location", location)])

    def release(self, call: Call) -> Answer:
        released = self.reservations.release(call.path_params["allocationId"])
        if released is None:
            raise NotFoundError(f"no open allocation {call.path_params['allocationId']!r}")
        return Answer(200, {"data": {"allocationId": released.id, "status": "Released"}})

    def overview(self, call: Call) -> Answer:
        data = serialize.overview(self.snapshot(), self.ledger.open_allocations(), self.prices)
        return Answer(200, {"data": data})

    def cost_analysis(self, call: Call) -> Answer:
        days = serialize.int_param(call.query, "days", default=7, low=1, high=90)
        end = self.clock()
        start = end - timedelta(days=days)
        analysis = cost.analyse(
            self.ledger.overlapping(start, end),
            start=start,
            end=end,
            capacity_hourly=cost.capacity_hourly(self.snapshot(), self.prices),
            currency=self.prices.currency,
        )
        return Answer(200, {"data": serialize.cost_analysis(analysis)})


def build_api_routes(
    *,
    ledger: Ledger,
    snapshot: Callable[[], InventorySnapshot],
    reservations: ReservationService,
    prices: PriceTable,
    tokens: TokenStore,
    clock: Callable[[], datetime],
    registry: CollectorRegistry | None = None,
    logger: logging.Logger | None = None,
) -> list[BaseRoute]:
    """The routes of ``/api/v1``, the last one answering 404 for any other path under it."""
    api = GpuApi(ledger=ledger, snapshot=snapshot, reservations=reservations, prices=prices, clock=clock)
    metrics = ApiMetrics.register(registry) if registry is not None else None
    shared = _Shared(tokens=tokens, logger=logger or logging.getLogger("kgm.api"), metrics=metrics)
    table: list[tuple[str, dict[str, Handler], frozenset[Role] | None]] = [
        ("/api/v1/health", {"GET": api.health}, None),
        ("/api/v1/openapi.json", {"GET": api.openapi}, None),
        ("/api/v1/gpu/devices", {"GET": api.devices}, auth.DEVICES),
        ("/api/v1/gpu/allocations", {"GET": api.list_allocations, "POST": api.reserve}, auth.ALLOCATIONS),
        (
            "/api/v1/gpu/allocations/{allocationId}",
            {"GET": api.get_allocation, "DELETE": api.release},
            auth.ALLOCATIONS,
        ),
        ("/api/v1/gpu/overview", {"GET": api.overview}, auth.OVERVIEW),
        ("/api/v1/gpu/cost/analysis", {"GET": api.cost_analysis}, auth.COST),
    ]
    routes: list[BaseRoute] = [
        Route(path, ApiEndpoint(path, handlers, roles, shared), name=f"api:{path}")
        for path, handlers, roles in table
    ]
    routes.append(Route("/api/v1/{rest:path}", _NotFound(), name="api:not-found"))
    return routes
