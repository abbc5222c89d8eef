"""Cost budgets per team: a GpuQuota's ``costPerDay`` / ``costPerMonth`` against what its pods and
reservations really cost (the ledger) over the last 24 hours / 730 hours, as ``cost.threshold``
conditions for the watchdog (one per quota and window, resolved when the spend falls back).

Admission judges the same limits on the rate of what is held now; this judges the bill, so a team that
ran hot earlier in the day hears about it even when its pods are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain.allocation import Allocation
from inventory.domain.cost import allocation_cost
from inventory.domain.quota import HOURS_PER_DAY, HOURS_PER_MONTH, Quota, Unit
from inventory.notify.formats import Event, Severity
from inventory.notify.watchdog import Condition

_WINDOWS = {
    Unit.COST_PER_DAY: (timedelta(hours=HOURS_PER_DAY), "24 h"),
    Unit.COST_PER_MONTH: (timedelta(hours=HOURS_PER_MONTH), "30 days"),
}


@dataclass(frozen=True, slots=True)
class Budget:
    quota: Quota
    unit: Unit
    limit: Decimal


def budgets(quotas: Iterable[Quota]) -> list[Budget]:
    """The cost budgets of ``quotas``: each daily or monthly cost limit."""
    return [
        Budget(quota, unit, limit)
        for quota in quotas
        for unit, limit in quota.limits.items()
        if unit in _WINDOWS
    ]


def spent(budget: Budget, allocations: Iterable[Allocation], *, now: datetime) -> Decimal:
    """What the quota's allocations cost within the budget's window up to ``now``. A pod's team is its
    ledger row's (its ``gpu.kgm.io/team`` label, else its namespace, as the webhook labels pods)."""
    start = now - _WINDOWS[budget.unit][0]
    return sum(
        (allocation_cost(a, start, now) for a in allocations if budget.quota.applies(a.namespace, a.team)),
        Decimal(0),
    )


def budget_conditions(
    quotas: Iterable[Quota],
    overlapping: Callable[[datetime, datetime], Iterable[Allocation]],
    *,
    now: datetime,
    currency: str = "USD",
) -> dict[str, Condition]:
    """A ``cost.threshold`` condition for each budget its quota's spend has passed, by dedup key."""
    wanted = budgets(quotas)
    if not wanted:
        return {}
    longest = max(_WINDOWS[b.unit][0] for b in wanted)
    allocations = list(overlapping(now - longest, now))
    found = {}
    for budget in wanted:
        cost = spent(budget, allocations, now=now)
        if cost <= budget.limit:
            continue
        quota = budget.quota
        key = f"cost/quota/{quota.namespace}/{quota.name}/{budget.unit.value}"
        window = _WINDOWS[budget.unit][1]
        found[key] = Condition(
            Event.COST_THRESHOLD,
            key,
            Severity.WARNING,
            f"{quota.scope}: GPU cost of the last {window} is {cost:.2f} {currency}, over its budget of "
            f"{budget.limit} ({quota.kind} {quota.namespace}/{quota.name})",
            (
                ("scope", quota.scope),
                ("quota", f"{quota.namespace}/{quota.name}"),
                ("cost", f"{cost:.2f}"),
                ("threshold", str(budget.limit)),
                ("window", window),
            ),
        )
    return found


class BudgetWatch:
    """:func:`budget_conditions` for the watchdog, read from the ledger at most every ``every_s`` (a month
    of allocations is not read every watchdog round)."""

    def __init__(
        self,
        quotas: Callable[[], Iterable[Quota]],
        overlapping: Callable[[datetime, datetime], Iterable[Allocation]],
        *,
        currency: str = "USD",
        every_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._quotas = quotas
        self._overlapping = overlapping
        self._currency = currency
        self._every_s = every_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._found: dict[str, Condition] = {}
        self._at: float | None = None

    def __call__(self) -> dict[str, Condition]:
        now = self._clock()
        if self._at is None or now - self._at >= self._every_s:
            self._found = budget_conditions(
                list(self._quotas()), self._overlapping, now=self._wall_clock(), currency=self._currency
            )
            self._at = now
        return self._found
