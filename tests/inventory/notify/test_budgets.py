"""Teams' cost budgets: a GpuQuota's costPerDay / costPerMonth against the ledger's spend, as
cost.threshold conditions the watchdog sends once and resolves once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.quota import Quota, QuotaLimits
from inventory.live.cache import InventoryCache
from inventory.notify.budgets import BudgetWatch, budget_conditions
from inventory.notify.formats import Event
from inventory.notify.watchdog import Watchdog

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def held(
    key: str, hours_ago: float, *, team: str | None = "nlp", namespace: str = "ml", price: str = "10"
) -> Allocation:
    return Allocation(
        id=key,
        namespace=namespace,
        pod=key,
        pod_uid=key,
        node="n1",
        resource="nvidia.com/gpu",
        count=1,
        gpu_model="H100-80GB",
        hourly_price=Decimal(price),
        status=Status.ACTIVE,
        start=NOW - timedelta(hours=hours_ago),
        team=team,
    )


def quota(**limits: Decimal) -> Quota:
    return Quota(kind="GpuQuota", namespace="ml", name="nlp", team="nlp", limits=QuotaLimits(**limits))


ALLOCATIONS = [
    held("a", 30),  # 10/h: 240 in the last 24 h, 300 in all
    held("b", 5, team="vision"),  # another team's
    held("c", 2, namespace="other"),  # the team's, in another namespace: 20
]


def overlapping(start: datetime, end: datetime) -> list[Allocation]:
    return [a for a in ALLOCATIONS if a.start < end]


@pytest.mark.parametrize(
    ("limits", "keys"),
    [
        ({"cost_per_day": Decimal(250)}, ["cost/quota/ml/nlp/costPerDay"]),  # 260 > 250
        ({"cost_per_day": Decimal(260)}, []),  # at the budget is within it
        ({"cost_per_month": Decimal(300)}, ["cost/quota/ml/nlp/costPerMonth"]),  # 320 > 300
        ({"cost_per_hour": Decimal(1), "gpu_equivalents": Decimal(0)}, []),  # no budget: admission's only
    ],
)
def test_a_team_over_its_budget_is_a_cost_threshold_condition(
    limits: dict[str, Decimal], keys: list[str]
) -> None:
    found = budget_conditions([quota(**limits)], overlapping, now=NOW)
    assert sorted(found) == keys


def test_the_condition_names_team_spend_budget_and_quota() -> None:
    (condition,) = budget_conditions([quota(cost_per_day=Decimal(250))], overlapping, now=NOW).values()
    assert condition.event is Event.COST_THRESHOLD
    assert condition.summary == (
        "team nlp: GPU cost of the last 24 h is 260.00 USD, over its budget of 250 (GpuQuota ml/nlp)"
    )
    assert dict(condition.details)["cost"] == "260.00"


def test_the_watchdog_notifies_a_budget_once_and_resolves_it_once() -> None:
    quotas = [quota(cost_per_day=Decimal(250))]
    now = [0.0]
    watch = BudgetWatch(lambda: quotas, overlapping, every_s=60, clock=lambda: now[0], wall_clock=lambda: NOW)
    sent: list[object] = []
    empty = InventoryCache(catalogue=builtin_catalogue())
    dog = Watchdog(snapshot=empty.snapshot, daily_cost=lambda: None, notify=sent.append, more=watch)
    assert [n.dedup_key for n in dog.check()] == ["cost/quota/ml/nlp/costPerDay"]
    assert dog.check() == []
    quotas[0] = quota(cost_per_day=Decimal(1000))
    assert dog.check() == []  # read again only after every_s
    now[0] = 60.0
    (resolved,) = dog.check()
    assert resolved.dedup_key == "cost/quota/ml/nlp/costPerDay"
