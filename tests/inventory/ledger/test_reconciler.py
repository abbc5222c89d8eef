"""The reconciler's decisions over a real (SQLite, in-memory) ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Allocation, AllocationFilter, Status, allocation_id
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.ledger.reconciler import Reconciler, over_limit, plan_resync, pod_view
from inventory.ledger.sql import SqlLedger
from inventory.live.static import cache_of

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
MIG = "nvidia.com/mig-3g.40gb"
CACHE = cache_of(
    parse_cluster(
        {
            "nodes": [
                {
                    "name": "h100",
                    "gpus": [
                        {"model": "H100-80GB", "count": 2},
                        {"model": "H100-80GB", "mig": ["3g.40gb", "3g.40gb"]},
                    ],
                },
            ]
        }
    )
)


def shape_of(node: str) -> NodeShape | None:
    state = CACHE.snapshot().states.get(node)  # type: ignore[call-overload]
    return state.shape if state else None


def pod(
    uid: str,
    resources: dict[str, str],
    *,
    node: str | None = "h100",
    phase: str = "Running",
    finished: str | None = None,
    deleted: str | None = None,
    team: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "uid": uid,
        "name": f"pod-{uid}",
        "namespace": "ml",
        "creationTimestamp": "2026-11-27T07:00:00Z",
    }
    if team:
        metadata["labels"] = {"gpu.kgm.io/team": team}
    if deleted:
        metadata["deletionTimestamp"] = deleted
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-27T07:30:00Z"}
        ],
    }
    if finished:
        status["containerStatuses"] = [{"name": "c", "state": {"terminated": {"finishedAt": finished}}}]
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": resources}}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": metadata, "spec": spec, "status": status}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ledger() -> Iterator[SqlLedger]:
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        yield ledger


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reconciler(ledger: SqlLedger, clock: Clock) -> Reconciler:
    return Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable(), clock=clock)


def test_a_bound_pod_opens_one_allocation_per_resource_priced_by_its_node(
    reconciler: Reconciler, ledger: SqlLedger
) -> None:
    reconciler.on_pod("ADDED", pod("a", {"nvidia.com/gpu": "2", MIG: "1"}, team="vision"))
    whole = ledger.get(allocation_id("a", "nvidia.com/gpu"))
    mig = ledger.get(allocation_id("a", MIG))
    assert whole is not None and mig is not None
    assert (whole.count, whole.hourly_price, whole.gpu_model, whole.team) == (
        2,
        Decimal("3.90"),
        "H100-80GB",
        "vision",
    )
    assert mig.hourly_price == (Decimal("3.90") * Decimal(3) / Decimal(7)).quantize(Decimal("0.000001"))
    assert whole.start == datetime(2026, 11, 27, 7, 30, tzinfo=UTC)  # when it was scheduled


def test_the_same_event_twice_changes_nothing(reconciler: Reconciler, ledger: SqlLedger) -> None:
    for _ in range(2):
        reconciler.on_pod("ADDED", pod("a", {"nvidia.com/gpu": "1"}))
        reconciler.on_pod("MODIFIED", pod("a", {"nvidia.com/gpu": "1"}))
    assert len(ledger.open_allocations()) == 1
    for _ in range(2):
        reconciler.on_pod("DELETED", pod("a", {"nvidia.com/gpu": "1"}, deleted="2026-11-27T09:00:00Z"))
    closed = ledger.get(allocation_id("a", "nvidia.com/gpu"))
    assert closed is not None
    assert (closed.status, closed.end, closed.end_inferred) == (
        Status.RELEASED,
        datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
        False,
    )


def test_a_finished_pod_closes_at_its_finish_time(reconciler: Reconciler, ledger: SqlLedger) -> None:
    reconciler.on_pod("ADDED", pod("a", {"nvidia.com/gpu": "1"}))
    reconciler.on_pod(
        "MODIFIED", pod("a", {"nvidia.com/gpu": "1"}, phase="Succeeded", finished="2026-11-27T08:45:00Z")
    )
    closed = ledger.get(allocation_id("a", "nvidia.com/gpu"))
    assert closed is not None and closed.end == datetime(2026, 11, 27, 8, 45, tzinfo=UTC)


def test_pods_without_gpus_or_a_node_are_not_recorded(reconciler: Reconciler, ledger: SqlLedger) -> None:
    reconciler.on_pod("ADDED", pod("cpu", {"cpu": "2"}))
    reconciler.on_pod("ADDED", pod("pending", {"nvidia.com/gpu": "1"}, node=None))
    assert ledger.open_allocations() == []


def test_resync_closes_what_is_gone_opens_what_is_missing_and_keeps_the_rest(
    reconciler: Reconciler, ledger: SqlLedger, clock: Clock
) -> None:
    for uid in ("kept", "vanished", "finished"):
        reconciler.on_pod("ADDED", pod(uid, {"nvidia.com/gpu": "1"}))
    clock.now = T0 + timedelta(hours=1)
    listing = [
        pod("kept", {"nvidia.com/gpu": "1"}),
        pod("finished", {"nvidia.com/gpu": "1"}, phase="Failed", finished="2026-11-27T08:20:00Z"),
        pod("new", {MIG: "1"}),
        pod("ran-while-down", {MIG: "1"}, phase="Succeeded", finished="2026-11-27T08:10:00Z"),
    ]
    plan = reconciler.resync(listing)
    assert plan is not None
    vanished = ledger.get(allocation_id("vanished", "nvidia.com/gpu"))
    finished = ledger.get(allocation_id("finished", "nvidia.com/gpu"))
    ran = ledger.get(allocation_id("ran-while-down", MIG))
    assert vanished is not None and (vanished.end, vanished.end_inferred) == (clock.now, True)
    assert finished is not None and (finished.end, finished.end_inferred) == (
        datetime(2026, 11, 27, 8, 20, tzinfo=UTC),
        False,
    )
    assert (
        ran is not None
        and ran.status is Status.RELEASED
        and ran.end == datetime(2026, 11, 27, 8, 10, tzinfo=UTC)
    )
    assert {a.pod_uid for a in ledger.open_allocations()} == {"kept", "new"}
    before = ledger.find(AllocationFilter(), limit=500).items
    reconciler.resync(listing)
    assert ledger.find(AllocationFilter(), limit=500).items == before  # a second resync changes nothing


def reservation_r1(pod: str, expires_at: datetime | None = None) -> Allocation:
    """Reservation r1: one 3g.40gb on h100 for ``ml/<pod>``, not yet claimed."""
    return Allocation(
        id="r1",
        namespace="ml",
        pod=pod,
        pod_uid=None,
        node="h100",
        resource=MIG,
        count=1,
        gpu_model="H100-80GB",
        hourly_price=Decimal("1.67"),
        status=Status.RESERVED,
        start=T0,
        expires_at=expires_at,
    )


def test_an_unclaimed_reservation_expires_at_resync(
    reconciler: Reconciler, ledger: SqlLedger, clock: Clock
) -> None:
    ledger.record_start(reservation_r1(pod="later", expires_at=T0 + timedelta(hours=1)))
    clock.now = T0 + timedelta(hours=2)
    reconciler.resync([])
    expired = ledger.get("r1")
    assert expired is not None and (expired.status, expired.end) == (Status.EXPIRED, T0 + timedelta(hours=1))


def test_a_lapsed_reservation_is_announced_once_like_a_release(ledger: SqlLedger, clock: Clock) -> None:
    heard: list[tuple[str, Status, bool]] = []
    reconciler = Reconciler(
        ledger=ledger,
        shape_of=shape_of,
        prices=PriceTable(),
        clock=clock,
        on_change=lambda row, opened: heard.append((row.id, row.status, opened)),
    )
    ledger.record_start(reservation_r1(pod="later", expires_at=T0 + timedelta(hours=1)))
    clock.now = T0 + timedelta(minutes=30)
    reconciler.resync([])
    assert heard == []  # not yet due
    clock.now = T0 + timedelta(hours=2)
    reconciler.resync([])
    reconciler.resync([])
    assert heard == [("r1", Status.EXPIRED, False)]


def reserved_then_claimed(ledger: SqlLedger) -> dict[str, Any]:
    """Reservation r1 (a 3g.40gb on h100) in the ledger, and the pod that claims it."""
    ledger.record_start(reservation_r1(pod="pod-a"))
    claiming = pod("a", {MIG: "1"})
    claiming["metadata"]["annotations"] = {"gpu.kgm.io/allocation-id": "r1"}
    return claiming


def test_a_pod_that_claims_a_reservation_takes_over_its_row(
    reconciler: Reconciler, ledger: SqlLedger
) -> None:
    claiming = reserved_then_claimed(ledger)
    reconciler.on_pod("ADDED", claiming)
    row = ledger.get("r1")
    assert row is not None and (row.status, row.pod_uid) == (Status.ACTIVE, "a")
    assert ledger.get(allocation_id("a", MIG)) is None


@pytest.mark.parametrize(
    ("namespace", "name", "resources"),
    [
        pytest.param("elsewhere", "pod-a", {MIG: "1"}, id="a pod in another namespace"),
        pytest.param("ml", "pod-b", {MIG: "1"}, id="another pod of the namespace"),
        pytest.param("ml", "pod-a", {"nvidia.com/gpu": "1"}, id="another resource"),
    ],
)
def test_a_stranger_carrying_a_reservations_id_does_not_take_its_row(
    reconciler: Reconciler, ledger: SqlLedger, namespace: str, name: str, resources: dict[str, str]
) -> None:
    reserved_then_claimed(ledger)
    stranger = pod("s", resources)
    stranger["metadata"].update(
        {"namespace": namespace, "name": name, "annotations": {"gpu.kgm.io/allocation-id": "r1"}}
    )
    reconciler.on_pod("ADDED", stranger)
    assert ledger.get("r1") == reservation_r1(pod="pod-a")  # still the reservation, still reserved
    (resource,) = resources
    own = ledger.get(allocation_id("s", resource))
    assert own is not None and (own.namespace, own.pod, own.status) == (namespace, name, Status.ACTIVE)


def test_a_follower_writes_nothing(ledger: SqlLedger) -> None:
    follower = Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable(), is_leader=lambda: False)
    follower.on_pod("ADDED", pod("a", {"nvidia.com/gpu": "1"}))
    assert follower.resync([pod("a", {"nvidia.com/gpu": "1"})]) is None
    assert ledger.open_allocations() == []


def test_the_plan_is_a_pure_function_of_its_inputs() -> None:
    listing = [pod("a", {"nvidia.com/gpu": "1"})]
    first = plan_resync([], listing, shape_of=shape_of, prices=PriceTable(), now=T0)
    second = plan_resync([], listing, shape_of=shape_of, prices=PriceTable(), now=T0)
    assert first == second
    assert pod_view(listing[0]).holds_gpus


@pytest.mark.parametrize(
    ("limits", "hours", "why"),
    [
        ({"max_duration_hours": 2}, 1.5, None),
        ({"max_duration_hours": 2}, 3, "running 3.0 h, past maxDurationHours 2"),
        ({"cost_limit": Decimal("5")}, 1, None),  # 3.90 after an hour
        ({"cost_limit": Decimal("5")}, 2, "cost 7.80 past costLimit 5"),
        ({}, 1000, None),
    ],
)
def test_a_running_allocation_past_its_reservations_limits_is_reported(
    limits: dict[str, Any], hours: float, why: str | None
) -> None:
    running = Allocation(
        id="a",
        namespace="ml",
        pod="p",
        pod_uid="u",
        node="h100",
        resource="nvidia.com/gpu",
        count=1,
        gpu_model="H100-80GB",
        hourly_price=Decimal("3.90"),
        status=Status.ACTIVE,
        start=T0,
        **limits,
    )
    assert over_limit(running, T0 + timedelta(hours=hours)) == why
    plan = plan_resync(
        [running],
        [pod("u", {"nvidia.com/gpu": "1"})],
        shape_of=shape_of,
        prices=PriceTable(),
        now=T0 + timedelta(hours=hours),
    )
    assert plan.over_limit == ([] if why is None else [("a", why)])


def test_a_claimed_reservation_is_matched_by_its_pod_at_resync_not_opened_twice(
    reconciler: Reconciler, ledger: SqlLedger
) -> None:
    claiming = reserved_then_claimed(ledger)
    reconciler.on_pod("ADDED", claiming)
    reconciler.resync([claiming])
    assert [(a.id, a.status) for a in ledger.open_allocations()] == [("r1", Status.ACTIVE)]
    finished = pod("a", {MIG: "1"}, phase="Succeeded", finished="2026-11-27T08:50:00Z")
    reconciler.resync([finished])
    row = ledger.get("r1")
    assert row is not None and row.end == datetime(2026, 11, 27, 8, 50, tzinfo=UTC)
    assert ledger.get(allocation_id("a", MIG)) is None  # its history is the reservation's row, once
