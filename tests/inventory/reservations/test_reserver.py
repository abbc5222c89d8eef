"""Reservations over a real cache and ledger."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Status
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.model import NodeName
from inventory.domain.offer import offer_of
from inventory.domain.prices import PriceTable
from inventory.ledger.sql import SqlLedger
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from inventory.reservations.reserver import Reserver
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.clusters import RESERVATION_CLUSTER

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def ledger() -> Iterator[SqlLedger]:
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        yield ledger


def reserver_for(ledger: SqlLedger, cache: InventoryCache | None = None) -> tuple[Reserver, InventoryCache]:
    cluster = parse_cluster(RESERVATION_CLUSTER)
    cache = cache or cache_of(cluster)
    offer = offer_of(cluster)
    return Reserver(
        cache=cache, ledger=ledger, prices=PriceTable(), offer=lambda: offer, clock=lambda: NOW
    ), cache


def request(**fields: Any) -> ReservationRequest:
    return ReservationRequest(namespace="ml", pod_name="train", **fields)


@pytest.mark.parametrize(
    ("fields", "resource"),
    [
        ({"required_memory_gb": Decimal(10), "workload_type": "Inference"}, "nvidia.com/mig-1g.10gb"),
        ({"required_memory_gb": Decimal(30)}, "nvidia.com/mig-3g.40gb"),
        ({"required_memory_gb": Decimal(30), "workload_type": "Training"}, "nvidia.com/gpu"),
        ({"use_mig": True}, "nvidia.com/mig-1g.10gb"),
        ({}, "nvidia.com/gpu"),
    ],
)
def test_the_resource_follows_the_webhooks_rule(
    ledger: SqlLedger, fields: dict[str, Any], resource: str
) -> None:
    reserver, _ = reserver_for(ledger)
    allocation = reserver.reserve(request(**fields))
    assert allocation.resource == resource
    assert allocation.status is Status.RESERVED
    assert ledger.get(allocation.id) == allocation


def test_the_node_is_the_best_fit_and_the_hold_shows_in_the_cache(ledger: SqlLedger) -> None:
    reserver, cache = reserver_for(ledger)
    allocation = reserver.reserve(request(required_memory_gb=Decimal(30)))
    assert allocation.node == "small"  # one 3g.40gb there, two on 'big': keep the pair together
    assert cache.snapshot().capacity(NodeName("small")).mig_free["nvidia.com/mig-3g.40gb"] == 0
    assert allocation.hourly_price == (Decimal("3.90") * 3 / 7).quantize(Decimal("0.000001"))
    assert allocation.expires_at == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)  # 24 h by default


def test_concurrent_reservations_never_overbook(ledger: SqlLedger) -> None:
    reserver, _ = reserver_for(ledger)
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def reserve(pod: str) -> None:
        barrier.wait()
        try:
            reserver.reserve(ReservationRequest("ml", pod, required_memory_gb=Decimal(30)))
            outcome = "ok"
        except ReservationRefusedError as error:
            outcome = str(error)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=reserve, args=(f"train-{i}",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("ok") == 3  # three 3g.40gb instances in the cluster
    assert all(r == "no node has a free mig-3g.40gb now" for r in results if r != "ok")
    assert len(ledger.open_allocations()) == 3


def test_release_frees_the_hold_and_closes_the_row(ledger: SqlLedger) -> None:
    reserver, cache = reserver_for(ledger)
    allocation = reserver.reserve(request(use_mig=True))
    released = reserver.release(allocation.id)
    assert released is not None and released.status is Status.RELEASED
    assert reserver.release(allocation.id) is None
    assert cache.snapshot().capacity(NodeName(allocation.node or "")).mig_free["nvidia.com/mig-1g.10gb"] == 2


def test_a_restart_holds_open_reservations_again(ledger: SqlLedger) -> None:
    reserver, _ = reserver_for(ledger)
    first = reserver.reserve(request(required_memory_gb=Decimal(30)))
    restarted, cache = reserver_for(ledger)
    assert restarted.restore() == 1
    assert cache.snapshot().capacity(NodeName(first.node or "")).mig_free["nvidia.com/mig-3g.40gb"] == 0


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"max_duration_hours": 0}, 400, "maxDurationHours must be 1..168"),
        ({"max_duration_hours": 169}, 400, "maxDurationHours must be 1..168"),
        ({"required_memory_gb": Decimal(200)}, 400, "more than any GPU"),
        ({"use_mig": True, "required_memory_gb": Decimal(50)}, 409, "no MIG instance offered has 50 GB"),
    ],
)
def test_requests_that_cannot_be_met_are_refused_with_a_status(
    ledger: SqlLedger, fields: dict[str, Any], status: int, says: str
) -> None:
    reserver, _ = reserver_for(ledger)
    with pytest.raises(ReservationRefusedError, match=says) as refused:
        reserver.reserve(request(**fields))
    assert refused.value.status == status
