"""``/api/v1/gpu/cost/analysis``: the seeded allocations' cost over the last days, by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from inventory.api import Role, TokenStore
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import Ledger
from tests.inventory.api import NOW, assert_matches_spec, cluster_cache, harness

COST = "/api/v1/gpu/cost/analysis"


def test_a_weeks_cost_by_team_namespace_model_and_profile(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get(COST, role=Role.FINANCE)
    assert reply.status_code == 200
    assert_matches_spec(reply, COST)
    # a1: H100 3.90 x 3 h = 11.70; a2: 3g.40gb 3.90 x 3/7 x 2 h = 3.342857; a3: 2 A100 x 2.40 x 4 h = 19.20;
    # a4 (a reservation, held 1 h): 2.40; a5 ended 9 days ago. Capacity: 2 H100 + 2 A100 = 12.60/h.
    assert reply.json()["data"] == {
        "window": {"start": "2025-05-26T12:00:00Z", "end": "2025-06-02T12:00:00Z", "days": 7.0},
        "currency": "USD",
        "total": 36.64,
        "byTeam": {"unassigned": 19.2, "ml": 15.04, "data": 2.4},
        "byNamespace": {"research": 19.2, "training": 15.04, "inference": 2.4},
        "byModel": {"A100-80GB": 21.6, "H100-80GB": 15.04},
        "byProfile": {"gpu": 33.3, "mig-3g.40gb": 3.34},
        "idle": {"cost": 2080.16, "capacityCost": 2116.8, "utilization": 0.0173},
    }


def test_the_window_is_the_last_days_asked_for(ledger: Ledger, tokens: TokenStore) -> None:
    data = harness(ledger, tokens).get(f"{COST}?days=1", role=Role.VIEWER).json()["data"]
    assert data["window"] == {"start": "2025-06-01T12:00:00Z", "end": "2025-06-02T12:00:00Z", "days": 1.0}
    assert data["total"] == 17.44  # a3 ended before the window
    assert data["idle"] == {"cost": 284.96, "capacityCost": 302.4, "utilization": 0.0577}


@pytest.mark.parametrize("days", ["0", "91", "-1", "seven", "7.5"])
def test_days_out_of_range_get_400(ledger: Ledger, tokens: TokenStore, days: str) -> None:
    reply = harness(ledger, tokens).get(f"{COST}?days={days}")
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("days must be a whole number from 1 to 90")


def test_ninety_days_is_the_longest_window(ledger: Ledger, tokens: TokenStore) -> None:
    data = harness(ledger, tokens).get(f"{COST}?days=90").json()["data"]
    assert data["window"]["days"] == 90.0
    assert data["total"] == 130.24  # 36.64 and a5: 3.90 x 24 h = 93.60, ten days ago


@pytest.mark.parametrize(
    ("first_seen", "capacity_cost"),
    [
        pytest.param(NOW - timedelta(minutes=1), 0.21, id="a minute old: 12.60 for a minute"),
        pytest.param(NOW - timedelta(hours=6), 75.6, id="six hours old: 12.60 x 6 h"),
        pytest.param(NOW - timedelta(days=3), 302.4, id="older than the window: the whole day"),
    ],
)
def test_idle_capacity_counts_only_from_when_the_cluster_was_first_seen(
    tokens: TokenStore, first_seen: datetime, capacity_cost: float
) -> None:
    """The reported case: a server a minute old reported a whole day of idle capacity (2,371 dollars
    for the demo cluster); its GPUs were paid for a minute, not a day."""
    with SqlLedger.open("sqlite:///:memory:") as empty:
        cache = cluster_cache(first_seen)
        data = harness(empty, tokens, snapshot=cache.snapshot).get(f"{COST}?days=1").json()["data"]
    assert data["total"] == 0
    assert data["idle"] == {"cost": capacity_cost, "capacityCost": capacity_cost, "utilization": 0.0}
