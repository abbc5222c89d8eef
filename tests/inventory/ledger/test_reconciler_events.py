"""What a resync tells pods as Events: over a reservation's limit, and a reservation lapsed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.domain.events import PodRef, RecordedEvents
from inventory.domain.prices import PriceTable
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.test_reconciler import MIG, T0, Clock, pod, reservation_r1, shape_of


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> RecordedEvents:
    return RecordedEvents()


@pytest.fixture
def reconciler(ledger: SqlLedger, clock: Clock, events: RecordedEvents) -> Reconciler:
    return Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable(), clock=clock, events=events)


def claimed(ledger: SqlLedger, **limits: Any) -> dict[str, Any]:
    """A running pod on reservation r1, with ``limits``."""
    ledger.record_start(
        Allocation(
            id="r1", namespace="ml", pod="pod-a", pod_uid=None, node="h100", resource=MIG, count=1,
            gpu_model="H100-80GB", hourly_price=Decimal("1.67"), status=Status.RESERVED, start=T0,
            expires_at=T0 + timedelta(hours=24), **limits,
        )
    )  # fmt: skip
    running = pod("a", {MIG: "1"})
    running["metadata"]["annotations"] = {"gpu.kgm.io/allocation-id": "r1"}
    return running


@pytest.mark.parametrize(
    ("limits", "hours", "reason", "why"),
    [
        pytest.param({"cost_limit": Decimal("5")}, 4, "OverCostLimit", "past costLimit 5", id="cost"),
        pytest.param(
            {"max_duration_hours": 2}, 3, "OverMaxDuration", "past maxDurationHours 2", id="duration"
        ),
    ],
)
def test_a_pod_past_its_reservations_limit_is_told_once(
    reconciler: Reconciler,
    ledger: SqlLedger,
    clock: Clock,
    events: RecordedEvents,
    limits: dict[str, Any],
    hours: int,
    reason: str,
    why: str,
) -> None:
    running = claimed(ledger, **limits)
    reconciler.on_pod("ADDED", running)
    reconciler.resync([running])
    assert events.events == []  # within its limits
    clock.now = T0 + timedelta(hours=hours)
    reconciler.resync([running])
    reconciler.resync([running])
    [event] = events.events
    assert (event.pod, event.reason, event.type, event.action) == (
        PodRef("ml", "pod-a", "a"),
        reason,
        "Warning",
        "Reconcile",
    )
    assert why in event.message and "r1" in event.message and "keeps running" in event.message


def test_the_pod_a_lapsed_reservation_was_for_is_told(
    reconciler: Reconciler, ledger: SqlLedger, clock: Clock, events: RecordedEvents
) -> None:
    ledger.record_start(reservation_r1(pod="pod-w", expires_at=T0 + timedelta(hours=1)))
    waiting = pod("w", {MIG: "1"}, node=None, phase="Pending")
    claiming = pod("c", {MIG: "1"}, node=None, phase="Pending")
    claiming["metadata"]["annotations"] = {"gpu.kgm.io/allocation-id": "r1"}
    stranger = pod("s", {MIG: "1"}, node=None, phase="Pending")
    clock.now = T0 + timedelta(hours=2)
    reconciler.resync([waiting, claiming, stranger])
    assert sorted((e.pod.name, e.reason, e.action) for e in events.events) == [
        ("pod-c", "ReservationLapsed", "Expire"),
        ("pod-w", "ReservationLapsed", "Expire"),
    ]
    assert events.events[0].message == (
        "reservation r1 (1 x nvidia.com/mig-3g.40gb on h100) lapsed unclaimed at 2026-11-27T09:00:00Z; "
        "its hold is released"
    )
    reconciler.resync([waiting, claiming, stranger])
    assert len(events.events) == 2  # it lapses once


def test_a_lapsed_reservation_without_a_pod_tells_no_one(
    reconciler: Reconciler, ledger: SqlLedger, clock: Clock, events: RecordedEvents
) -> None:
    ledger.record_start(reservation_r1(pod="", expires_at=T0 + timedelta(hours=1)))
    clock.now = T0 + timedelta(hours=2)
    reconciler.resync([pod("x", {MIG: "1"}, node=None, phase="Pending")])
    assert events.events == []
    assert (row := ledger.get("r1")) is not None and row.status is Status.EXPIRED
