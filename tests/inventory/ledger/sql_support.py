"""Allocations to record and where the SQL ledger's tests keep them (``Store``: a ledger's URL and a
side door into its database)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from inventory.domain.allocation import Allocation, Status, allocation_id

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
H = timedelta(hours=1)


@dataclass(frozen=True)
class Store:
    """Where a ledger lives, and a side door into it: SQL run on a connection of its own."""

    kind: str
    url: str
    query: Callable[[str], list[tuple[Any, ...]]]


def sqlite_query(path: Path, statement: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(statement).fetchall()


def alloc(name: str, *, start: datetime = T0, status: Status = Status.ACTIVE, **fields: Any) -> Allocation:
    uid = f"uid-{name}"
    base = Allocation(
        id=allocation_id(uid, "nvidia.com/gpu"),
        namespace="ml",
        pod=f"pod-{name}",
        pod_uid=uid,
        node="node-a",
        resource="nvidia.com/gpu",
        count=1,
        gpu_model="H100",
        hourly_price=Decimal("2.50"),
        status=status,
        start=start,
    )
    return dataclasses.replace(base, **fields)


FULL = Allocation(
    id=allocation_id("uid-full", "nvidia.com/mig-3g.40gb"),
    namespace="research",
    pod="train-0",
    pod_uid="uid-full",
    node="gpu-node-7",
    resource="nvidia.com/mig-3g.40gb",
    count=2,
    gpu_model="NVIDIA H100 80GB HBM3",
    hourly_price=Decimal("3.141592653589793238462643383279"),  # more digits than a float holds
    status=Status.RELEASED,
    start=datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),  # not in UTC
    end=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    end_inferred=True,
    device_ids=("MIG-1c2d", "MIG-3e4f"),
    team="vision",
    user="ada",
    workload_type="Training",
    expires_at=datetime(2026, 3, 1, 18, 0, tzinfo=UTC),
    max_duration_hours=48,
    cost_limit=Decimal("100.10"),
    message="quota 'vision' reached: ünïcode ✓",
)


RESERVATION = Allocation(
    id="reservation-1",
    namespace="ml",
    pod="notebook",
    pod_uid=None,
    node=None,
    resource="nvidia.com/gpu",
    count=1,
    gpu_model=None,
    hourly_price=Decimal("0"),
    status=Status.RESERVED,
    start=T0,
)
