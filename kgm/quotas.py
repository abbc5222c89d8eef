"""`kgm serve`'s GPU quotas put together: the quota book over the cache, offer and ledger, its metrics,
the watches and the leader's status writes in live mode (kept out of :mod:`kgm.assembly`, which
calls these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from inventory.domain.allocation import Allocation
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.offer import Offer
from inventory.domain.prices import PriceTable
from inventory.ledger.sql import SqlLedger
from inventory.live.cache import InventoryCache
from inventory.live.quota_metrics import QuotaCollector
from inventory.live.quotas import QuotaBook
from inventory.notify.budgets import BudgetWatch
from kgm.lifespan import Background, Worker
from kgm.settings import ServeSettings

if TYPE_CHECKING:
    from inventory.kube import KubeClient


def quota_book(
    settings: ServeSettings,
    registry: CollectorRegistry,
    *,
    cache: InventoryCache,
    offer: Callable[[], Offer],
    prices: PriceTable,
    ledger: SqlLedger,
) -> QuotaBook:
    """The book admission, reservations, the REST API and the metrics read (quotas come from watches)."""
    quotas = QuotaBook(
        snapshot=cache.snapshot,
        offer=offer,
        prices=prices,
        catalogue=builtin_catalogue(),
        reservations=ledger.open_allocations,
        assume_ttl_s=settings.quota_assume_ttl_s,
    )
    registry.register(QuotaCollector(quotas.views))
    return quotas


def telling_quotas(
    quotas: QuotaBook, announce: Callable[[Allocation, bool], None]
) -> Callable[[Allocation, bool], None]:
    """A reservation recorded or released: the book reads the ledger afresh, then ``announce``."""

    def changed(allocation: Allocation, opened: bool) -> None:
        quotas.reservations_changed()
        announce(allocation, opened)

    return changed


def budget_watch(quotas: QuotaBook | None, ledger: SqlLedger) -> BudgetWatch:
    """Each GpuQuota's daily and monthly cost budget against the ledger, for the watchdog."""
    return BudgetWatch(
        lambda: [view.quota for view in quotas.views()] if quotas is not None else [],
        ledger.overlapping,
        currency=quotas.currency if quotas is not None else "USD",
    )


def watch_quotas(
    background: Background,
    kube: KubeClient,
    quotas: QuotaBook,
    settings: ServeSettings,
    *,
    is_leader: Callable[[], bool],
) -> None:
    """GpuQuotas and ResourceQuotas watched into ``quotas``; the leader writes GpuQuota status."""
    from inventory.live.quota_watches import QuotaStatusWriter, quota_reflectors  # noqa: PLC0415

    for reflector in quota_reflectors(kube, quotas, watch_timeout_seconds=settings.watch_timeout_s):
        background.add(Worker(f"reflector-{reflector.name}", reflector.run))
    writer = QuotaStatusWriter(quotas, kube, is_leader=is_leader, interval_s=settings.quota_status_interval_s)
    background.add(Worker("quota-status", writer.run))
