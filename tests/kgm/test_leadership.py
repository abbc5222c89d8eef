"""Who decides among replicas: the Lease's term and restore (kgm/leadership.py), the leader's pod label and
its hand-back (inventory/leader.py), the extender's gate (kgm/web/routes.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from extender.service import FilterOutcome, Victims
from inventory.domain.labels import ROLE
from inventory.kube import KubeUnavailableError
from inventory.leader import ROLE_LEADER, RoleLabel
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from kgm.leadership import NOT_LEADER, LeaderOnlyReservations, Leadership, TermRestore
from kgm.web.routes import extender_routes
from tests.inventory.test_leader import Clocks, MemoryLeases, elector
from tests.support.kube_emulator import KubeEmulator


class Flags:
    def __init__(self) -> None:
        self.leader, self.term, self.ready, self.restores = False, 0, True, 0

    def restore(self) -> int:
        self.restores += 1
        return 3

    def leadership(self) -> Leadership:
        return Leadership(
            is_leader=lambda: self.leader,
            term=lambda: self.term,
            ready=lambda: self.ready,
            restore=self.restore,
        )


def test_a_leader_serves_only_once_it_has_restored_the_holds_of_its_term() -> None:
    flags = Flags()
    leadership = flags.leadership()
    assert not leadership.restore_once() and flags.restores == 0  # not leader: nothing to restore
    flags.leader, flags.term, flags.ready = True, 1, False
    assert not leadership.restore_once() and flags.restores == 0  # the cache has not synced yet
    flags.ready = True
    assert leadership.restore_once() and flags.restores == 1
    assert leadership.restore_once() and flags.restores == 1  # once per term
    flags.leader = False
    assert not leadership.serving()
    flags.leader, flags.term = True, 2  # leads again: another replica may have decided meanwhile
    assert not leadership.serving()
    assert leadership.restore_once() and flags.restores == 2


def test_a_failed_restore_leaves_the_replica_refusing_and_is_tried_again() -> None:
    flags = Flags()
    flags.leader, flags.term = True, 1
    calls = []

    def failing() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("ledger down")
        return 0

    leadership = Leadership(
        is_leader=lambda: True, term=lambda: 1, ready=lambda: True, restore=failing, interval_s=0.01
    )
    stop = threading.Event()
    thread = threading.Thread(target=leadership.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if leadership.serving():
                break
            stop.wait(0.01)
        assert leadership.serving() and len(calls) == 2
    finally:
        stop.set()
        thread.join()


class Reservations:
    def reserve(self, request: ReservationRequest) -> Any:
        return "reserved"

    def release(self, allocation_id: str) -> Any:
        return "released"


def test_reservation_writes_are_refused_with_503_off_the_leader() -> None:
    serving = [False]
    gated = LeaderOnlyReservations(Reservations(), lambda: serving[0])
    with pytest.raises(ReservationRefusedError, match="not the leader") as refused:
        gated.reserve(ReservationRequest(namespace="ml", pod_name="p"))
    assert refused.value.status == 503
    with pytest.raises(ReservationRefusedError):
        gated.release("a1")
    serving[0] = True
    assert gated.reserve(ReservationRequest(namespace="ml", pod_name="p")) == "reserved"
    assert gated.release("a1") == "released"


class Extender:
    """Answers every verb as if it had room; records that it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def filter(self, pod: Mapping[str, Any], node_names: Any) -> FilterOutcome:
        self.asked.append("filter")
        return FilterOutcome(passed=list(node_names))

    def prioritize(self, pod: Mapping[str, Any], node_names: Any) -> dict[str, int]:
        self.asked.append("prioritize")
        return dict.fromkeys(node_names, 10)

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        self.asked.append("bind")
        return None

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        self.asked.append("preempt")
        return dict(victims)


POD = {"metadata": {"name": "p", "namespace": "ml", "uid": "u"}, "spec": {"containers": []}}
CALLS = {
    "filter": {"Pod": POD, "NodeNames": ["n1"]},
    "prioritize": {"Pod": POD, "NodeNames": ["n1"]},
    "bind": {"PodName": "p", "PodNamespace": "ml", "PodUID": "u", "Node": "n1"},
    "preempt": {"Pod": POD, "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "v"}], "NumPDBViolations": 0}}},
}


@pytest.mark.parametrize(
    ("verb", "status", "error_field"),
    [("filter", 200, "Error"), ("prioritize", 503, None), ("bind", 200, "Error"), ("preempt", 200, "Error")],
)
def test_off_the_leader_each_verb_is_refused_without_reaching_the_service(
    verb: str, status: int, error_field: str | None
) -> None:
    service, serving = Extender(), [False]
    registry = CollectorRegistry()
    app = Starlette(routes=extender_routes(service, registry=registry, serving=lambda: serving[0]))

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://kgm") as c:
            return await c.post(f"/extender/{verb}", content=json.dumps(CALLS[verb]))

    refused = asyncio.run(post())
    assert refused.status_code == status
    body = refused.json()
    assert NOT_LEADER in (body[error_field] if error_field else body["error"]["message"])
    assert service.asked == []
    labels = {"verb": verb, "outcome": "not_leader"}
    assert registry.get_sample_value("kgm_extender_requests_total", labels) == 1
    serving[0] = True
    assert asyncio.run(post()).status_code == 200
    assert service.asked == [verb]


class PodLabels:
    def __init__(self) -> None:
        self.patches: list[dict[str, str | None]] = []
        self.fail = False

    def patch_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        if self.fail:
            raise KubeUnavailableError("down")
        self.patches.append(dict(labels))
        return {}


def test_the_pod_label_follows_the_lease_and_a_failed_patch_is_retried() -> None:
    store = PodLabels()
    label = RoleLabel(store=store, namespace="kgm-system", pod="kgm-a")
    label.sync(False)  # the first round clears what a previous process in this pod may have left
    label.sync(False)
    store.fail = True
    label.sync(True)
    store.fail = False
    label.sync(True)
    label.sync(True)
    label.sync(False)
    assert store.patches == [{ROLE: None}, {ROLE: ROLE_LEADER}, {ROLE: None}]


def test_a_stopping_leader_hands_the_lease_back_and_unlabels_its_pod() -> None:
    clocks, leases = Clocks(), MemoryLeases()
    a, b = elector(leases, "a", clocks), elector(leases, "b", clocks)
    rounds: list[bool] = []
    stop = threading.Event()
    stop.set()  # one look at the loop's end: no round, then the step-down
    assert a.try_acquire_or_renew()
    a.run(stop, on_round=rounds.append)
    assert not a.is_leader() and rounds == [False]
    assert not b.try_acquire_or_renew()  # handed back with one second left, on the API server's clock
    clocks.advance(1.5)
    assert b.try_acquire_or_renew()  # not 15 s later
    assert b.term == 1


def test_a_leader_that_stops_renewing_is_replaced_once_the_lease_lapses() -> None:
    clocks, leases = Clocks(), MemoryLeases()
    a, b = elector(leases, "a", clocks), elector(leases, "b", clocks)
    assert a.try_acquire_or_renew() and a.term == 1
    clocks.advance(14)
    assert not a.is_leader()  # a stops serving before the lease lapses for others
    assert not b.try_acquire_or_renew()
    clocks.advance(2)
    assert b.try_acquire_or_renew() and b.term == 1
    assert not a.try_acquire_or_renew()
    clocks.advance(20)
    assert a.try_acquire_or_renew() and a.term == 2  # a new term: its holds are restored again


def test_the_leader_labels_its_own_pod_through_the_official_client(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(
        "v1/pods", {"metadata": {"name": "kgm-a", "namespace": "kgm-system", "labels": {"app": "kgm"}}}
    )
    label = RoleLabel(store=kube_emulator.client, namespace="kgm-system", pod="kgm-a")
    label.sync(True)
    stored = kube_emulator.stored("v1/pods", "kgm-a", namespace="kgm-system")
    assert stored is not None and stored["metadata"]["labels"] == {"app": "kgm", ROLE: ROLE_LEADER}
    label.sync(False)
    stored = kube_emulator.stored("v1/pods", "kgm-a", namespace="kgm-system")
    assert stored is not None and stored["metadata"]["labels"] == {"app": "kgm"}


class Row:
    def __init__(self, allocation_id: str, *, is_open: bool) -> None:
        self.id, self.is_open = allocation_id, is_open


def test_a_new_term_lets_go_of_reservations_another_leader_ended_meanwhile() -> None:
    times = iter(datetime(2026, 12, 6, hour, tzinfo=UTC) for hour in range(1, 10))
    asked: list[tuple[datetime, datetime]] = []
    forgotten: list[str] = []
    rows = [Row("released-by-the-other", is_open=False), Row("still-reserved", is_open=True)]

    def overlapping(start: datetime, end: datetime) -> list[Row]:
        asked.append((start, end))
        return rows

    restore = TermRestore(
        overlapping=overlapping,  # type: ignore[arg-type]
        forget=forgotten.append,
        restore=lambda: 1,
        clock=lambda: next(times),
    )
    assert restore() == 1
    assert (asked, forgotten) == ([], [])  # a first term: nothing was held before
    assert restore() == 1
    # Since the previous term began: the ended reservation lets go, the open one is held again.
    assert asked == [(datetime(2026, 12, 6, 1, tzinfo=UTC), datetime(2026, 12, 6, 2, tzinfo=UTC))]
    assert forgotten == ["released-by-the-other"]
