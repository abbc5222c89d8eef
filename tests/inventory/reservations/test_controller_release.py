"""The GpuAllocation controller releasing: on delete (even before the status came back, or by a
restarted controller), on a relist that misses the object, and never once a pod has claimed it."""

from __future__ import annotations

import logging

import pytest

from inventory.domain.allocation import Status
from tests.inventory.reservations.controller_support import NOW, Rig, ga


def test_deleting_the_object_releases_the_reservation(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    allocation_id = rig.store.statuses[("ml", "train")]["allocationId"]
    assert rig.mig_free("small", "3g.40gb") == 0
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("DELETED", rig.store.written(obj))
    assert rig.mig_free("small", "3g.40gb") == 1
    released = rig.ledger.get(allocation_id)
    assert released is not None and released.status is Status.RELEASED
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "gpuallocation.released"]
    assert record.allocation == allocation_id  # type: ignore[attr-defined]
    rig.controller.on_event("DELETED", rig.store.written(obj))  # again: no such open allocation, fine


def test_a_delete_seen_before_the_status_came_back_still_releases(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    rig.controller.on_event("DELETED", obj)  # the object as last seen, without the status
    assert rig.mig_free("small", "3g.40gb") == 1
    assert rig.ledger.open_allocations() == []


def test_a_restarted_controller_releases_what_an_earlier_one_reserved(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    restarted = rig.restarted()
    restarted.replace([rig.store.written(obj)], "3")
    restarted.on_event("DELETED", rig.store.written(obj))
    assert rig.ledger.open_allocations() == []


def test_a_relist_releases_objects_deleted_while_the_watch_was_down(rig: Rig) -> None:
    kept, deleted = ga("kept", uid="uid-k", useMig=True), ga("gone", uid="uid-g", useMig=True)
    rig.controller.replace([kept, deleted], "3")
    assert len(rig.ledger.open_allocations()) == 2
    rig.controller.replace([rig.store.written(kept)], "9")
    [still] = rig.ledger.open_allocations()
    assert still.id == rig.store.statuses[("ml", "kept")]["allocationId"]


def test_an_object_recreated_under_the_same_name_gets_a_new_reservation(rig: Rig) -> None:
    first = ga(uid="uid-1", useMig=True)
    rig.controller.on_event("ADDED", first)
    old_id = rig.store.statuses[("ml", "train")]["allocationId"]
    rig.store.statuses.clear()
    rig.controller.replace([ga(uid="uid-2", useMig=True)], "9")  # the DELETED event was missed
    [open_one] = rig.ledger.open_allocations()
    assert open_one.id != old_id
    assert rig.store.statuses[("ml", "train")]["allocationId"] == open_one.id


def test_a_claimed_reservation_stays_with_its_pod(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    obj = ga(useMig=True)
    rig.controller.on_event("ADDED", obj)
    allocation_id = rig.store.statuses[("ml", "train")]["allocationId"]
    reserved = rig.ledger.get(allocation_id)
    assert reserved is not None
    assert rig.ledger.claim(
        allocation_id, namespace="ml", pod="train", pod_uid="pod-uid", resource=reserved.resource, start=NOW
    )
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("DELETED", rig.store.written(obj))
    held = rig.ledger.get(allocation_id)
    assert held is not None and held.status is Status.ACTIVE
    assert [getattr(r, "event", None) for r in caplog.records] == ["gpuallocation.claimed"]
