"""The GpuAllocation controller when things go wrong: a follower writes nothing until it leads, a
failed status write or a vanished object holds nothing, an unavailable ledger postpones the decision."""

from __future__ import annotations

from inventory.domain.allocation import Allocation
from inventory.ledger.sql import SqlLedger
from inventory.reservations.controller import GpuAllocationController
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.reservations.controller_support import NOW, Rig, Store, ga


def test_a_follower_writes_nothing_and_takes_over_when_it_leads(ledger: SqlLedger) -> None:
    rig = Rig(ledger, leader=False)
    obj = ga(useMig=True)
    rig.controller.replace([obj], "1")
    rig.controller.on_event("MODIFIED", obj)
    rig.controller.resync()
    assert rig.store.writes == []
    assert ledger.open_allocations() == []
    rig.leader = True  # the old leader went away before deciding
    rig.controller.resync()
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"
    rig.leader = False
    rig.controller.on_event("DELETED", rig.store.written(obj))
    assert len(ledger.open_allocations()) == 1  # releasing is the leader's job too


def test_a_failed_status_write_holds_nothing_and_is_tried_again(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.store.failures = 1
    rig.controller.on_event("ADDED", obj)
    assert rig.store.writes == []
    assert rig.ledger.open_allocations() == []
    assert rig.mig_free("small", "3g.40gb") == 1
    rig.controller.resync()
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"
    assert len(rig.ledger.open_allocations()) == 1


def test_an_object_deleted_before_its_status_was_written_holds_nothing(rig: Rig) -> None:
    rig.store.gone.add(("ml", "train"))
    rig.controller.on_event("ADDED", ga(requiredMemoryGb=30))
    assert rig.ledger.open_allocations() == []
    assert rig.mig_free("small", "3g.40gb") == 1


class UnavailableLedger:
    def reserve(self, request: ReservationRequest) -> Allocation:
        raise ReservationRefusedError("the ledger is unavailable: gone", status=503)

    def release(self, allocation_id: str) -> Allocation | None:
        raise AssertionError("nothing to release")


def test_an_unavailable_ledger_postpones_the_decision() -> None:
    store = Store()
    controller = GpuAllocationController(reservations=UnavailableLedger(), store=store, clock=lambda: NOW)
    controller.on_event("ADDED", ga())
    controller.resync()
    assert store.writes == []
