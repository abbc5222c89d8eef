"""Metrics of allocations and cost (read from the ledger at scrape time) and of the reconciler."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inventory.domain.allocation import Status
from inventory.ledger.reconciler import over_limit
from inventory.ledger.store import Ledger, LedgerError

_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ReconcileMetrics:
    errors: Counter
    write_seconds: Histogram
    allocation_failures: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ReconcileMetrics:
        return cls(
            errors=Counter(
                "kgm_reconcile_errors", "Ledger writes or resyncs that failed.", registry=registry
            ),
            write_seconds=Histogram(
                "kgm_ledger_write_seconds",
                "Time of one ledger write by the reconciler.",
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                registry=registry,
            ),
            allocation_failures=Counter(
                "gpu_allocation_failures", "Reservations that could not be placed.", registry=registry
            ),
        )


class LedgerCollector(Collector):
    """Active allocations, cost rate, the last day's cost and the running total, stale reservations.

    The running total walks the whole history, so it is recomputed at most every ``total_every_s``.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        total_every_s: float = 60.0,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._total_every_s = total_every_s
        self._total: tuple[float, float] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self._clock()
        try:
            open_rows = self._ledger.open_allocations()
            daily = sum(
                (
                    a.cost(now) - a.cost(max(a.start, now - _DAY)) if a.start < now - _DAY else a.cost(now)
                    for a in self._ledger.overlapping(now - _DAY, now)
                ),
                Decimal(0),
            )
            total = self._running_total(now)
        except LedgerError:
            return  # a scrape while the database is away shows the gap rather than zeros
        active = [a for a in open_rows if a.status is Status.ACTIVE]
        yield GaugeMetricFamily(
            "gpu_allocations_active", "Allocations held by running pods.", value=len(active)
        )
        yield GaugeMetricFamily(
            "gpu_reservations_active",
            "Reservations waiting for their pod.",
            value=sum(1 for a in open_rows if a.status is Status.RESERVED),
        )
        yield GaugeMetricFamily(
            "kgm_reservations_stale",
            "Reservations past their expiry, not yet closed by a resync.",
            value=sum(
                1 for a in open_rows if a.status is Status.RESERVED and a.expires_at and a.expires_at <= now
            ),
        )
        yield GaugeMetricFamily(
            "kgm_allocations_over_limit",
            "Running allocations past their reservation's duration or cost limit.",
            value=sum(1 for a in active if over_limit(a, now) is not None),
        )
        yield GaugeMetricFamily(
            "gpu_cost_per_hour",
            "Hourly cost of what is allocated now.",
            value=float(sum((a.hourly_price * a.count for a in active), Decimal(0))),
        )
        yield GaugeMetricFamily(
            "gpu_daily_cost", "Cost of allocations over the last 24 hours.", value=float(daily)
        )
        yield CounterMetricFamily(
            "gpu_cost", "Cost of every allocation ever recorded, up to now.", value=total
        )

    def _running_total(self, now: datetime) -> float:
        if self._total is None or time.monotonic() - self._total[0] >= self._total_every_s:
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            total = sum((a.cost(now) for a in self._ledger.overlapping(epoch, now)), Decimal(0))
            self._total = (time.monotonic(), float(total))
        return self._total[1]
