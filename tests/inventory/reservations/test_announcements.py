"""Reservations announce what they open and close (``on_change``, which `kgm serve` turns into
``allocation.created`` / ``allocation.released``), through the REST API's Reserver and through the
GpuAllocation controller alike; what is refused or not released announces nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import offer_of
from inventory.domain.prices import PriceTable
from inventory.ledger.sql import SqlLedger
from inventory.live.static import cache_of
from inventory.reservations.reserver import Reserver
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.clusters import RESERVATION_CLUSTER
from tests.inventory.reservations.controller_support import NOW, Rig, ga


def announcing(ledger: SqlLedger) -> tuple[Reserver, list[tuple[str, bool]]]:
    cluster = parse_cluster(RESERVATION_CLUSTER)
    offer = offer_of(cluster)
    heard: list[tuple[str, bool]] = []
    reserver = Reserver(
        cache=cache_of(cluster),
        ledger=ledger,
        prices=PriceTable(),
        offer=lambda: offer,
        clock=lambda: NOW,
        on_change=lambda allocation, opened: heard.append((allocation.id, opened)),
    )
    return reserver, heard


def test_a_reservation_is_announced_when_made_and_when_released(ledger: SqlLedger) -> None:
    reserver, heard = announcing(ledger)
    made = reserver.reserve(ReservationRequest("ml", "train", use_mig=True))
    assert heard == [(made.id, True)]
    reserver.release(made.id)
    assert heard == [(made.id, True), (made.id, False)]
    assert reserver.release(made.id) is None
    assert heard == [(made.id, True), (made.id, False)]  # released once, announced once


@pytest.mark.parametrize(
    "request_",
    [
        ReservationRequest("ml", "train", required_memory_gb=Decimal(500)),  # more than any GPU: 400
        ReservationRequest("ml", "train", max_duration_hours=0),  # 400
    ],
)
def test_a_refused_reservation_is_not_announced(ledger: SqlLedger, request_: ReservationRequest) -> None:
    reserver, heard = announcing(ledger)
    with pytest.raises(ReservationRefusedError):
        reserver.reserve(request_)
    assert heard == []


def test_a_second_reservation_for_the_same_pod_is_not_announced(ledger: SqlLedger) -> None:
    reserver, heard = announcing(ledger)
    made = reserver.reserve(ReservationRequest("ml", "train"))
    with pytest.raises(ReservationRefusedError):
        reserver.reserve(ReservationRequest("ml", "train"))
    assert heard == [(made.id, True)]


def test_a_claimed_reservation_is_not_released_nor_announced(ledger: SqlLedger) -> None:
    reserver, heard = announcing(ledger)
    made = reserver.reserve(ReservationRequest("ml", "train", use_mig=True))
    assert ledger.claim(made.id, namespace="ml", pod="train", pod_uid="u", resource=made.resource, start=NOW)
    with pytest.raises(ReservationRefusedError):
        reserver.release(made.id)
    assert heard == [(made.id, True)]


def test_a_gpuallocation_is_announced_when_reserved_and_when_deleted(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    allocation_id = rig.store.statuses[("ml", "train")]["allocationId"]
    assert rig.announced == [(allocation_id, True)]
    rig.controller.on_event("MODIFIED", rig.store.written(obj))  # its own status write: nothing new
    rig.controller.on_event("DELETED", rig.store.written(obj))
    assert rig.announced == [(allocation_id, True), (allocation_id, False)]
