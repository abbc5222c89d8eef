"""The allocation ledger: every GPU allocation, from its start to its end, exactly once.

An allocation is one pod's hold on one kind of GPU resource on one node (a pod with two kinds has
two), or a reservation made through the API before its pod exists. Its id is derived from what it
is (pod UID and resource), so recording the same event twice changes nothing. History is append-
friendly: rows are inserted, then closed once; they are never deleted.

Implementations: ``inventory.ledger.sql.SqlLedger`` over SQLite (a file, or ``:memory:`` for tests
and the simulation) and PostgreSQL (psycopg 3), one schema with versioned migrations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

_ALLOCATION_NAMESPACE = uuid.UUID("6f1c1a9e-3b4f-5c7d-9e2a-0b8c4d6e2f10")
_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)


class Status(StrEnum):
    RESERVED = "reserved"  # held through the API; its pod does not exist yet
    ACTIVE = "active"  # a bound pod holds it
    RELEASED = "released"  # ended: the pod finished or was deleted, or the reservation was released
    EXPIRED = "expired"  # a reservation whose pod never came within maxDurationHours
    FAILED = "failed"  # a reservation that could not be placed


OPEN_STATUSES = frozenset({Status.RESERVED, Status.ACTIVE})
#: The most ``maxDurationHours`` a reservation may ask for (a week): how long it waits for its pod,
#: and how long the pod may run before it is reported as over its limit.
MAX_DURATION_HOURS = 168


def span_hours(span: timedelta) -> Decimal:
    """``span`` in hours, exactly: whole microseconds, so the hours are exact decimals (a float's binary
    expansion of the seconds is not)."""
    return Decimal(span // timedelta(microseconds=1)) / _MICROSECONDS_PER_HOUR


def allocation_id(pod_uid: str, resource: str) -> str:
    """The id of a pod's allocation of one resource: the same pod and resource, the same id."""
    return str(uuid.uuid5(_ALLOCATION_NAMESPACE, f"{pod_uid}/{resource}"))


@dataclass(frozen=True, slots=True)
class Allocation:
    id: str
    namespace: str
    pod: str
    #: None for a reservation whose pod does not exist yet.
    pod_uid: str | None
    node: str | None
    #: ``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>``.
    resource: str
    count: int
    gpu_model: str | None
    hourly_price: Decimal
    status: Status
    start: datetime
    end: datetime | None = None
    #: The end is when the loss was discovered, not when it happened (deleted while we were down).
    end_inferred: bool = False
    device_ids: tuple[str, ...] = ()
    team: str | None = None
    user: str | None = None
    workload_type: str | None = None
    #: Reservations: when an unclaimed reservation lapses, and the limits set at reservation.
    expires_at: datetime | None = None
    max_duration_hours: int | None = None
    cost_limit: Decimal | None = None
    message: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def hours_within(self, start: datetime, end: datetime) -> Decimal:
        """Hours it was held inside ``[start, end)``; an open one counts up to ``end``."""
        held_from = max(start, self.start)
        held_to = min(end, self.end or end)
        return span_hours(held_to - held_from) if held_to > held_from else Decimal(0)

    def cost_within(self, start: datetime, end: datetime) -> Decimal:
        """What it cost inside ``[start, end)``: the one cost formula (unrounded; the API rounds)."""
        return self.hourly_price * self.count * self.hours_within(start, end)

    def cost(self, until: datetime) -> Decimal:
        """What it has cost from its start to its end (or ``until`` while open)."""
        return self.cost_within(self.start, self.end or until)


@dataclass(frozen=True, slots=True)
class AllocationFilter:
    namespace: str | None = None
    team: str | None = None
    status: Status | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Allocation]
    total: int
    #: Opaque position of the next page, or None on the last page.
    next_cursor: str | None = field(default=None)
