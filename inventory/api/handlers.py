"""The REST API's handlers: ``/api/v1/...`` for ``kgm serve``. Each handler parses, calls, serializes.

One :class:`ApiPath` per path, which ``kgm.web``'s ``JsonEndpoint`` serves (method, bounded read,
metrics, the per-request log line, catch-all); it checks the caller's token before the body is read
and words every failure in the project's error shape (405, 401/403, 413, 400, 404, 503, 500) instead
of a framework page. The handlers are plain functions of a parsed :class:`Call`; they run in a worker
thread, as the ledger and the reservation service wait on a database.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from starlette.types import Scope

from inventory.api import auth, openapi, serialize
from inventory.api.auth import (
    ALLOCATIONS,
    Area,
    Authenticator,
    AuthUnavailableError,
    Caller,
    Role,
    forbidden,
)
from inventory.api.mig_plan import plan_view
from inventory.api.quotas import quota_list
from inventory.api.serialize import BadRequestError
from inventory.domain import cost
from inventory.domain.allocation import AllocationFilter, Status
from inventory.domain.names import is_dns_label
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import InventorySnapshot
from inventory.layouts.planner import PlanView
from inventory.layouts.settings import PlannerMode
from inventory.ledger.store import Ledger, LedgerError
from inventory.live.quotas import QuotaReport
from inventory.reservations.request import RequestError, body_request
from inventory.reservations.service import ReservationRefusedError, ReservationService

MAX_BODY_BYTES = 64 * 1024
#: Where the caller a token names is kept in the request's scope, from the check to the answer.
CALLER = "caller"
_INTERNAL = "internal error; the server's logs say more"
#: The allocation id GET /api/v1/health ends to prove the ledger takes writes: none has it.
HEALTH_PROBE_ID = "\x1fkgm health probe"
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="kgm"')
#: The RBAC verb of each method, as kube-rbac-proxy maps them; listing paths say "list" themselves.
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}  # fmt: skip


class NotFoundError(LookupError):
    """No such thing (404); the message says what was looked for."""


class ForbiddenError(PermissionError):
    """The caller may not do this in that namespace (403); the message says what and where."""


@dataclass(frozen=True, slots=True)
class Call:
    """A request as handlers see it: checked, authenticated, its body read."""

    method: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    caller: Caller | None
    path: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Call], Answer]


LogLine = tuple[str, tuple[object, ...], Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One request's answer, with what its log line and the request counter say about it."""

    route: str
    method: str
    path: str
    caller: Caller | None
    status: int
    body: bytes | None  # None: an error, in the error shape with ``message``
    message: str = ""
    headers: Sequence[tuple[bytes, bytes]] = ()
    known: bool = True  # the path takes the method; other methods are counted as "other"

    @property
    def labels(self) -> tuple[str, str, str]:
        # Callers choose methods: the label's values are bounded to those the path takes.
        return (self.route, self.method if self.known else "other", str(self.status))

    @property
    def timed(self) -> bool:
        return True

    @property
    def level(self) -> int:
        # Reads are many and routine; writes and refusals (who tried what) are worth keeping.
        read = self.method in ("GET", "HEAD") and self.status not in (401, 403)
        return logging.DEBUG if read else logging.INFO

    def line(self, seconds: float) -> LogLine:
        extra = {
            "event": "api.request",
            "caller": self.caller.name if self.caller else None,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(seconds * 1000, 2),
        }
        return "%s %s %d", (self.method, self.path, self.status), extra


class ApiPath:
    """One path: its handler and RBAC verb per method, and its area of the API (None: open to anybody)."""

    #: The ledger and the reservation service wait on a database; the check may wait on the API server
    #: (TokenReview, SubjectAccessReview) or the identity provider's keys: both run in a worker thread.
    blocking = True

    def __init__(
        self,
        route: str,
        handlers: Mapping[str, Handler],
        area: Area | None,
        tokens: Authenticator,
        verbs: Mapping[str, str] | None = None,
    ) -> None:
        """``verbs``: the RBAC verb of each method (default: GET get, POST create, DELETE delete)."""
        self.route = route
        self.handlers = handlers
        self.area = area
        self.methods = frozenset(handlers)
        self.verbs = {method: _VERBS.get(method, method.lower()) for method in handlers} | dict(verbs or {})
        self._tokens = tokens

    @property
    def roles(self) -> frozenset[Role] | None:
        """The roles that may call it (None: anybody), for the OpenAPI document's claims."""
        return self.area.roles if self.area is not None else None

    def check(self, scope: Scope) -> Reply | None:
        if self.area is None:
            return None
        verb = self.verbs[scope["method"]]
        verdict = auth.authorize(self._tokens, scope["headers"], self.area, verb, what=self.route)
        if isinstance(verdict, auth.Refusal):
            scope[CALLER] = verdict.caller
            headers = [_WWW_AUTHENTICATE] if verdict.status == 401 else []
            return self._error(scope, verdict.status, verdict.message, headers)
        scope[CALLER] = verdict
        return None

    def rejected(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Reply:
        return self._error(scope, status, message, headers)

    def parse(self, scope: Scope, body: bytes) -> Call:
        query = serialize.query_params(scope.get("query_string", b""))
        return Call(
            scope["method"], scope.get("path_params", {}), query, body, scope.get(CALLER), scope["path"]
        )

    def answer(self, call: Call) -> Reply:
        answer = self.handlers[call.method](call)
        body = orjson.dumps(answer.body)
        return Reply(
            self.route, call.method, call.path, call.caller, answer.status, body, headers=answer.headers
        )

    def failed(self, scope: Scope, call: Call | None, error: Exception) -> tuple[Reply, LogLine | None]:
        if isinstance(error, BadRequestError):
            return self._error(scope, 400, str(error)), None
        if isinstance(error, NotFoundError):
            return self._error(scope, 404, str(error)), None
        if isinstance(error, ForbiddenError):
            return self._error(scope, 403, str(error)), None
        if isinstance(error, AuthUnavailableError):
            return self._error(scope, 503, str(error)), None
        if isinstance(error, ReservationRefusedError):
            return self._error(scope, error.status, str(error)), None
        if isinstance(error, LedgerError):
            unavailable = "the allocation ledger is unavailable; try again later"
            return self._error(scope, 503, unavailable), ("ledger failed", (), {"event": "api.ledger_error"})
        line: LogLine = (
            "API request failed",
            (),
            {"event": "api.error", "method": scope["method"], "path": scope["path"]},
        )
        return self._error(scope, 500, _INTERNAL), line

    def _error(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> Reply:
        method = scope["method"]
        caller = scope.get(CALLER)
        known = method in self.methods
        return Reply(self.route, method, scope["path"], caller, status, None, message, headers, known)


@dataclass(frozen=True, slots=True)
class GpuApi:
    """The handlers, over the core they call."""

    ledger: Ledger
    snapshot: Callable[[], InventorySnapshot]
    reservations: ReservationService
    prices: PriceTable
    clock: Callable[[], datetime]
    #: Who may see and change reservations of which namespace (the paths' own check came first).
    tokens: Authenticator
    #: The MIG planner's last plan (a planner that is off shows an empty one).
    mig_plan: Callable[[], PlanView] = lambda: PlanView(mode=PlannerMode.OFF)
    #: The GPU quotas and what they count (none known: an empty list).
    quotas: Callable[[], QuotaReport] = lambda: QuotaReport([], [])

    def health(self, call: Call) -> Answer:
        # A real write that changes nothing: an UPDATE of an id no allocation has (a control character,
        # which no id the API or a pod gives can hold). A ledger that is read-only, locked or gone
        # raises LedgerError: 503 here, where `kgm validate` looks, not at the next allocation.
        self.ledger.record_end(HEALTH_PROBE_ID, self.clock())
        return Answer(200, {"data": {"status": "ok", "ledger": "writable"}})

    def openapi(self, call: Call) -> Answer:
        return Answer(200, openapi.document())

    def devices(self, call: Call) -> Answer:
        snapshot, node = self.snapshot(), call.query.get("nodeName")
        if node is not None and node not in snapshot.nodes:  # an empty list would read "no GPUs there"
            raise NotFoundError(f"no such node {node[:253]!r}")
        return Answer(200, {"data": serialize.devices(snapshot, node)})

    def list_allocations(self, call: Call) -> Answer:
        limit = serialize.int_param(call.query, "limit", default=100, low=1, high=500)
        namespace = self._listable_namespace(call)
        status = call.query.get("status")
        if status is not None and status.lower() not in {s.value for s in Status}:
            raise BadRequestError(f"status must be one of {', '.join(Status)}, not {status[:40]!r}")
        where = AllocationFilter(
            namespace=namespace,
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
        self._require(call, "get", found.namespace)
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
        self._require(call, "create", request.namespace)
        made = self.reservations.reserve(request)
        location = f"/api/v1/gpu/allocations/{made.id}".encode()
        return Answer(201, {"data": serialize.reservation(made)}, [(b"location", location)])

    def release(self, call: Call) -> Answer:
        found = self.ledger.get(call.path_params["allocationId"])
        if found is not None:  # an unknown id is the reservation service's 404, as before
            self._require(call, "delete", found.namespace)
        released = self.reservations.release(call.path_params["allocationId"])
        if released is None:
            raise NotFoundError(f"no open allocation {call.path_params['allocationId']!r}")
        return Answer(200, {"data": serialize.release(released)})

    def _allowed(self, call: Call, verb: str, namespace: str | None) -> bool:
        return call.caller is not None and self.tokens.allows(call.caller, ALLOCATIONS, verb, namespace)

    def _require(self, call: Call, verb: str, namespace: str) -> None:
        """403 unless the caller may ``verb`` reservations of ``namespace``. Another namespace's
        reservation is 403, not 404: ids are unguessable, and Kubernetes too says forbidden, not absent."""
        if not self._allowed(call, verb, namespace):
            assert call.caller is not None  # the path's check let no anonymous caller through
            raise ForbiddenError(forbidden(call.caller, ALLOCATIONS, verb, call.path, namespace))

    def _listable_namespace(self, call: Call) -> str | None:
        """The namespace a listing is narrowed to: the one asked for, if the caller may list it; none
        for a caller who may list every namespace; else the caller's only namespace, or 403 naming the
        way (the ledger pages one namespace at a time, as ``kubectl get -n`` asks for one)."""
        asked = call.query.get("namespace")
        if asked is not None:
            if not is_dns_label(asked):  # before any SubjectAccessReview is asked about it
                raise BadRequestError(f"namespace must be a namespace name, not {asked[:64]!r}")
            self._require(call, "list", asked)
            return asked
        if self._allowed(call, "list", None):
            return None
        caller = call.caller
        assert caller is not None
        mine = sorted(caller.namespaces or ())
        if len(mine) == 1:
            return mine[0]
        hint = f" (one of {', '.join(mine)})" if mine else ""
        reason = forbidden(caller, ALLOCATIONS, "list", call.path)
        raise ForbiddenError(f"{reason} in every namespace; name one with ?namespace={hint}")

    def overview(self, call: Call) -> Answer:
        data = serialize.overview(self.snapshot(), self.ledger.open_allocations(), self.prices)
        return Answer(200, {"data": data})

    def mig_plan_view(self, call: Call) -> Answer:
        return Answer(200, {"data": plan_view(self.mig_plan())})

    def quota_list(self, call: Call) -> Answer:
        return Answer(200, {"data": quota_list(self.quotas())})

    def cost_analysis(self, call: Call) -> Answer:
        days = serialize.int_param(call.query, "days", default=7, low=1, high=90)
        end = self.clock()
        start = end - timedelta(days=days)
        analysis = cost.analyse(
            self.ledger.overlapping(start, end),
            start=start,
            end=end,
            capacity=cost.capacity_of(self.snapshot(), self.prices),
            currency=self.prices.currency,
        )
        return Answer(200, {"data": serialize.cost_analysis(analysis)})


def api_paths(
    *,
    ledger: Ledger,
    snapshot: Callable[[], InventorySnapshot],
    reservations: ReservationService,
    prices: PriceTable,
    tokens: Authenticator,
    clock: Callable[[], datetime],
    mig_plan: Callable[[], PlanView] | None = None,
    quotas: Callable[[], QuotaReport] | None = None,
) -> list[ApiPath]:
    """The paths of ``/api/v1``, each with its handlers and area (``kgm.web.routes`` serves them);
    ``tokens`` tells who calls and what they may do (a token file, Kubernetes or OIDC)."""
    api = GpuApi(
        ledger=ledger, snapshot=snapshot, reservations=reservations, prices=prices, clock=clock, tokens=tokens
    )
    if mig_plan is not None:
        api = dataclasses.replace(api, mig_plan=mig_plan)
    if quotas is not None:
        api = dataclasses.replace(api, quotas=quotas)
    listing = {"GET": "list"}  # the RBAC verb of GET on a collection
    table: list[tuple[str, dict[str, Handler], Area | None, dict[str, str]]] = [
        ("/api/v1/health", {"GET": api.health}, None, {}),
        ("/api/v1/openapi.json", {"GET": api.openapi}, None, {}),
        ("/api/v1/gpu/devices", {"GET": api.devices}, auth.DEVICES, listing),
        (
            "/api/v1/gpu/allocations",
            {"GET": api.list_allocations, "POST": api.reserve},
            auth.ALLOCATIONS,
            listing,
        ),
        (
            "/api/v1/gpu/allocations/{allocationId}",
            {"GET": api.get_allocation, "DELETE": api.release},
            auth.ALLOCATIONS,
            {},
        ),
        ("/api/v1/gpu/overview", {"GET": api.overview}, auth.OVERVIEW, {}),
        ("/api/v1/gpu/mig/plan", {"GET": api.mig_plan_view}, auth.OVERVIEW, {}),
        ("/api/v1/gpu/quotas", {"GET": api.quota_list}, auth.QUOTAS, listing),
        ("/api/v1/gpu/cost/analysis", {"GET": api.cost_analysis}, auth.COST, {}),
    ]
    return [ApiPath(path, handlers, area, tokens, verbs) for path, handlers, area, verbs in table]
