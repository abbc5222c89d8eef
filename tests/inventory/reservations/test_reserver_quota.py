"""Reservations and GPU quotas: a reservation past its team's quota is refused (403, the quota's
message); one within it counts against the quota from the ledger until its pod claims it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from inventory.domain.allocation import Allocation
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import offer_of
from inventory.domain.quota import QuotaAsk
from inventory.ledger.sql import SqlLedger
from inventory.live.quotas import QuotaBook
from inventory.live.static import cache_of
from inventory.reservations.reserver import Reserver
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.clusters import RESERVATION_CLUSTER

CLUSTER = parse_cluster(RESERVATION_CLUSTER)
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def ledger() -> Iterator[SqlLedger]:
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        yield ledger


def test_a_reservation_past_the_team_s_quota_is_refused_and_one_within_counts(ledger: SqlLedger) -> None:
    cache = cache_of(CLUSTER)
    offer = offer_of(CLUSTER)
    quotas = QuotaBook(
        snapshot=cache.snapshot,
        offer=lambda: offer,
        prices=CLUSTER.prices,
        catalogue=CLUSTER.catalogue,
        reservations=ledger.open_allocations,
    )
    quotas.replace_gpuquotas(
        [
            {
                "metadata": {"name": "q", "namespace": "ml"},
                "spec": {"team": "nlp", "limits": {"gpuEquivalents": 1}},
            }
        ]
    )

    def changed(allocation: Allocation, opened: bool) -> None:
        quotas.reservations_changed()

    reserver = Reserver(
        cache=cache,
        ledger=ledger,
        prices=CLUSTER.prices,
        offer=lambda: offer,
        clock=lambda: NOW,
        on_change=changed,
        quota=quotas.admit,
    )
    held = reserver.reserve(ReservationRequest(namespace="ml", pod_name="a", team_id="nlp"))
    assert held.resource == "nvidia.com/gpu"
    with pytest.raises(ReservationRefusedError) as refused:
        reserver.reserve(ReservationRequest(namespace="ml", pod_name="b", team_id="nlp"))
    assert refused.value.status == 403
    assert str(refused.value) == "team nlp: 1 of 1 GPU-equivalents used, this pod needs 1 (GpuQuota ml/q)"
    # and a pod of the team is refused too: the reservation counts from the ledger at once
    assert quotas.admit(QuotaAsk(key="adm", namespace="ml", team="nlp", resources={"nvidia.com/gpu": 1}))
    # another team is not limited
    other = reserver.reserve(ReservationRequest(namespace="ml", pod_name="c", team_id="vision"))
    assert other.hourly_price == Decimal("3.90")
