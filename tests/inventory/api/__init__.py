"""The REST API in-process (httpx over ASGI) on a small real cluster, with fakes at our own seams.

The ledger is either a list-backed fake or the real ``SqlLedger`` on an in-memory SQLite: every
test that takes the ``ledger`` fixture (see :func:`open_ledger`) runs against both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import yaml
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from inventory.api import Authenticator, Role
from inventory.api.openapi import document
from inventory.domain.allocation import Allocation, AllocationFilter, Page, Status, allocation_id
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import InventorySnapshot
from inventory.ledger.store import Ledger
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from kgm.web.routes import build_api_routes

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
H100 = Decimal("3.90")
A100 = Decimal("2.40")
MIG_3G_40GB = H100 * 3 / 7  # 3 of the H100's 7 compute slices
#: One token per role, sharing a long prefix (a prefix of one must never pass for it).
TOKENS = {role: f"kgm-test-token-0123456789-{role.lower()}" for role in Role}
CALLERS = {role: f"{role.lower()}-client" for role in Role}
LEDGERS = ["list", "sql"]

CLUSTER = {
    "nodes": [
        {
            "name": "node-a",
            "gpus": [
                {"model": "H100-80GB", "count": 1},
                {"model": "H100-80GB", "count": 1, "mig": ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]},
            ],
        },
        {"name": "node-b", "gpus": [{"model": "A100-80GB", "count": 2}]},
    ]
}


def allocation(key: str, **fields: Any) -> Allocation:
    values: dict[str, Any] = {
        "id": allocation_id(f"uid-{key}", str(fields.get("resource", "nvidia.com/gpu"))),
        "namespace": "training",
        "pod": f"pod-{key}",
        "pod_uid": f"uid-{key}",
        "node": "node-a",
        "resource": "nvidia.com/gpu",
        "count": 1,
        "gpu_model": "H100-80GB",
        "hourly_price": H100,
        "status": Status.ACTIVE,
        "start": NOW - timedelta(hours=1),
        **fields,
    }
    return Allocation(**values)


#: a1 and a2 run on node-a; a3 ran 4 h yesterday; a4 is a reservation; a5 ended outside a 7-day window.
SEED = (
    allocation("a1", team="ml", start=NOW - timedelta(hours=3)),
    allocation("a2", team="ml", resource="nvidia.com/mig-3g.40gb", hourly_price=MIG_3G_40GB,
               start=NOW - timedelta(hours=2), device_ids=("MIG-x",)),
    allocation("a3", namespace="research", node="node-b", count=2, gpu_model="A100-80GB", hourly_price=A100,
               status=Status.RELEASED, start=NOW - timedelta(hours=30), end=NOW - timedelta(hours=26)),
    allocation("a4", namespace="inference", team="data", node="node-b", gpu_model="A100-80GB", pod_uid=None,
               hourly_price=A100, status=Status.RESERVED, expires_at=NOW + timedelta(hours=1),
               max_duration_hours=8, cost_limit=Decimal("50")),
    allocation("a5", team="ml", status=Status.RELEASED, start=NOW - timedelta(days=10),
               end=NOW - timedelta(days=9)),
)  # fmt: skip
IDS = {key: item.id for key, item in zip(("a1", "a2", "a3", "a4", "a5"), SEED, strict=True)}


class ListLedger:
    """A list-backed :class:`~inventory.ledger.store.Ledger`; cursors are offsets (else ValueError)."""

    def __init__(self) -> None:
        self.rows: dict[str, Allocation] = {}

    def record_start(self, allocation: Allocation) -> bool:
        return self.rows.setdefault(allocation.id, allocation) is allocation

    def record_end(
        self, allocation_id: str, end: datetime, *, inferred: bool = False, status: Status = Status.RELEASED
    ) -> bool:
        found = self.rows.get(allocation_id)
        if found is None or not found.is_open:
            return False
        self.rows[allocation_id] = replace(found, end=end, end_inferred=inferred, status=status)
        return True

    def end_reservation(
        self, reservation_id: str, end: datetime, *, status: Status = Status.RELEASED
    ) -> bool:
        found = self.rows.get(reservation_id)
        return found is not None and found.status is Status.RESERVED and self.record_end(reservation_id, end)

    def record_reservation(self, reservation: Allocation) -> bool:
        taken = any(
            a.status is Status.RESERVED and (a.namespace, a.pod) == (reservation.namespace, reservation.pod)
            for a in self.rows.values()
        )
        return not taken and self.record_start(reservation)

    def claim(
        self, reservation_id: str, *, namespace: str, pod: str, pod_uid: str, resource: str, start: datetime
    ) -> bool:
        raise AssertionError("the API never claims")

    def get(self, allocation_id: str) -> Allocation | None:
        return self.rows.get(allocation_id)

    def open_allocations(self) -> list[Allocation]:
        return [a for a in self.rows.values() if a.is_open]

    def find(self, where: AllocationFilter, *, limit: int = 100, cursor: str | None = None) -> Page:
        if cursor is not None and not cursor.isdigit():
            raise ValueError(f"not a page cursor: {cursor!r}")
        matches = sorted(
            (
                a
                for a in self.rows.values()
                if where.namespace in (None, a.namespace)
                and where.team in (None, a.team)
                and where.status in (None, a.status)
                and where.node in (None, a.node)
            ),
            key=lambda a: (-a.start.timestamp(), a.id),
        )
        offset = int(cursor or 0)
        more = len(matches) > offset + limit
        return Page(matches[offset : offset + limit], len(matches), str(offset + limit) if more else None)

    def overlapping(self, start: datetime, end: datetime) -> Iterator[Allocation]:
        return iter([a for a in self.rows.values() if a.start < end and (a.end is None or a.end > start)])

    def record_many(self, starts: Sequence[Allocation], ends: Sequence[tuple[str, datetime, bool]]) -> None:
        raise AssertionError("the API never resyncs")

    def close(self) -> None:
        pass


def open_ledger(kind: str) -> Iterator[Ledger]:
    """The ``ledger`` fixture's body: a fresh, seeded ledger of ``kind`` (``list`` or ``sql``)."""
    if kind == "list":
        ledger: Ledger = ListLedger()
    else:
        from inventory.ledger.sql import SqlLedger  # noqa: PLC0415  (only the sql variant needs it)

        ledger = SqlLedger.open("sqlite:///:memory:")
    for item in SEED:
        assert ledger.record_start(item)
    try:
        yield ledger
    finally:
        ledger.close()


@dataclass
class FakeReservations:
    """Reserves a 3g.40gb on node-a (or refuses with ``refusal``); records what it was asked."""

    ledger: Ledger
    refusal: ReservationRefusedError | None = None
    requests: list[ReservationRequest] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def reserve(self, request: ReservationRequest) -> Allocation:
        self.requests.append(request)
        if self.refusal is not None:
            raise self.refusal
        made = allocation(
            f"reservation-{len(self.requests)}", namespace=request.namespace, pod=request.pod_name,
            pod_uid=None, resource="nvidia.com/mig-3g.40gb", hourly_price=MIG_3G_40GB, status=Status.RESERVED,
            start=NOW, team=request.team_id, user=request.user_id, workload_type=request.workload_type,
        )  # fmt: skip
        self.ledger.record_start(made)
        return made

    def release(self, allocation_id: str) -> Allocation | None:
        self.released.append(allocation_id)
        if not self.ledger.record_end(allocation_id, NOW):
            return None
        return self.ledger.get(allocation_id)


#: When the test cluster was first seen: long before any cost window the tests ask about.
FIRST_SEEN = NOW - timedelta(days=365)


def cluster_cache(first_seen: datetime = FIRST_SEEN) -> InventoryCache:
    return cache_of(parse_cluster(CLUSTER, builtin_catalogue()), clock=lambda: first_seen)


def write_tokens(path: Path, tokens: dict[Role, str] | None = None) -> Path:
    entries = [{"token": t, "name": CALLERS[r], "role": r.value} for r, t in (tokens or TOKENS).items()]
    path.write_text(yaml.safe_dump(entries))
    return path


@dataclass
class Harness:
    ledger: Ledger
    reservations: FakeReservations
    registry: CollectorRegistry
    app: Starlette

    def request(
        self,
        method: str,
        path: str,
        *,
        role: Role | None = Role.ADMIN,
        token: str | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is None and role is not None:
            token = TOKENS[role]
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        body = orjson.dumps(json) if json is not None else content

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kgm") as client:
                return await client.request(method, path, content=body, headers=sent)

        return asyncio.run(go())

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)


def harness(
    ledger: Ledger,
    tokens: Authenticator,
    *,
    snapshot: Callable[[], InventorySnapshot] | None = None,
    reservations: FakeReservations | None = None,
    logger: logging.Logger | None = None,
    **views: Any,
) -> Harness:
    """The API over ``ledger``; ``views`` are build_api_routes' optional sources (``mig_plan=``,
    ``quotas=``)."""
    reservations = reservations or FakeReservations(ledger)
    registry = CollectorRegistry()
    routes = build_api_routes(
        ledger=ledger,
        snapshot=snapshot or cluster_cache().snapshot,
        reservations=reservations,
        prices=PriceTable(),
        tokens=tokens,
        clock=lambda: NOW,
        registry=registry,
        logger=logger or logging.getLogger("tests.api"),
        **views,
    )
    return Harness(ledger=ledger, reservations=reservations, registry=registry, app=Starlette(routes=routes))


def assert_matches_spec(reply: httpx.Response, path: str, method: str = "get") -> None:
    """The reply's body is what the OpenAPI document promises for its path, method and status."""
    spec = document()
    response = spec["paths"][path][method]["responses"][str(reply.status_code)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = {**response["content"]["application/json"]["schema"], "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(reply.json())
