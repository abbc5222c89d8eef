"""The GpuAllocation controller allocating: a new object reserved with every status field, what cannot
be met failed with the reason, and replays, relists and restarts never reserving twice."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Status
from tests.inventory.reservations.controller_support import Rig, ga


def test_a_new_object_is_allocated_with_every_status_field(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    obj = ga(workloadType="Inference", requiredMemoryGb=10, teamId="vision", podName="serve-0")
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("ADDED", obj)
    [(key, status)] = rig.store.writes
    assert key == ("ml", "train")
    assert status == {
        "phase": "Allocated",
        "allocatedResource": "nvidia.com/mig-1g.10gb",
        "nodeName": "small",
        "allocationId": status["allocationId"],
        "costPerHour": float((Decimal("3.90") / 7).quantize(Decimal("0.000001"))),
        "allocationTime": "2026-11-27T08:00:00Z",
        "message": "",
    }
    held = rig.ledger.get(status["allocationId"])
    assert held is not None
    assert (held.status, held.namespace, held.pod, held.team, held.node) == (
        Status.RESERVED,
        "ml",
        "serve-0",
        "vision",
        "small",
    )
    assert rig.mig_free("small", "1g.10gb") == 1
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "gpuallocation.allocated"]
    assert (record.namespace, record.gpuallocation, record.allocation) == ("ml", "train", held.id)  # type: ignore[attr-defined]


def test_pending_without_an_allocation_id_is_allocated_too(rig: Rig) -> None:
    rig.controller.on_event("ADDED", ga(status={"phase": "Pending"}))
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"useMig": True, "requiredMemoryGb": 50}, "no MIG instance offered has 50 GB"),
        ({"requiredMemoryGb": 200}, "requiredMemoryGb 200 is more than any GPU here (80 GB)"),
        ({"maxDurationHours": 500}, "invalid spec: spec.maxDurationHours must be a whole number 1..168"),
        ({"workloadType": "Batch"}, "invalid spec: spec.workloadType must be one of"),
    ],
)
def test_what_cannot_be_met_fails_with_the_reason(
    rig: Rig, caplog: pytest.LogCaptureFixture, spec: dict[str, Any], says: str
) -> None:
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("ADDED", ga(**spec))
    [(_, status)] = rig.store.writes
    assert status["phase"] == "Failed"
    assert status["message"].startswith(says)
    assert set(status) == {"phase", "message"}
    assert rig.ledger.open_allocations() == []
    assert [getattr(r, "event", None) for r in caplog.records] == ["gpuallocation.failed"]


def test_when_the_cluster_is_full_the_next_one_fails_and_says_what_is_missing(rig: Rig) -> None:
    objects = [ga(f"ga-{i}", uid=f"uid-{i}", requiredMemoryGb=30) for i in range(4)]
    for obj in objects:
        rig.controller.on_event("ADDED", obj)
    phases = [rig.store.statuses[("ml", f"ga-{i}")]["phase"] for i in range(4)]
    assert phases == ["Allocated", "Allocated", "Allocated", "Failed"]  # three 3g.40gb in the cluster
    assert rig.store.statuses[("ml", "ga-3")]["message"] == "no node has a free mig-3g.40gb now"


def test_replays_relists_and_restarts_never_reserve_twice(rig: Rig) -> None:
    obj = ga(useMig=True)
    rig.controller.on_event("ADDED", obj)
    # The same event again, a relist from before the status came back, then the status coming back.
    rig.controller.on_event("ADDED", obj)
    rig.controller.replace([obj], "5")
    rig.controller.resync()
    written = rig.store.written(obj)
    rig.controller.on_event("MODIFIED", written)
    rig.controller.replace([written], "7")
    # A restarted controller (or a new leader) sees the status and leaves it alone.
    restarted = rig.restarted()
    restarted.replace([written], "8")
    restarted.on_event("MODIFIED", written)
    restarted.resync()
    assert len(rig.store.writes) == 1
    assert len(rig.ledger.open_allocations()) == 1


def test_failed_objects_are_not_tried_again(rig: Rig) -> None:
    obj = ga(useMig=True, requiredMemoryGb=50)
    rig.controller.on_event("ADDED", obj)
    rig.controller.on_event("MODIFIED", rig.store.written(obj))
    rig.controller.resync()
    rig.restarted().replace([rig.store.written(obj)], "3")
    assert len(rig.store.writes) == 1
