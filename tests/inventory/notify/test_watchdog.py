"""Conditions worth a notification: told once when they start, once when they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.snapshot import CacheSettings, InventorySnapshot
from inventory.live.cache import InventoryCache
from inventory.notify.formats import Event, Notification
from inventory.notify.watchdog import Watchdog, WatchdogSettings, conditions
from tests.inventory.gpunodes import T0, gpu, gpunode


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0

    def __call__(self) -> float:
        return self.mono


def cache_with(
    clock: Clock, *, temperature: int = 40, unhealthy: dict[str, str] | None = None
) -> InventoryCache:
    cache = InventoryCache(
        catalogue=builtin_catalogue(),
        settings=CacheSettings(stale_after_s=90),
        clock=clock,
        wall_clock=lambda: T0,
    )
    cache.replace_gpunodes(
        [gpunode("n1", [gpu(0, node="n1", temperature=temperature), gpu(1, node="n1")], unhealthy=unhealthy)]
    )
    cache.replace_pods([])
    return cache


def test_each_condition_is_found_with_a_stable_key() -> None:
    clock = Clock()
    cache = cache_with(clock, temperature=88, unhealthy={"GPU-n1-1": "XID 79"})
    clock.mono += 100  # silent for 100 s
    found = conditions(
        cache.snapshot(), Decimal("120"), WatchdogSettings(daily_cost_threshold=Decimal("100"))
    )
    assert {(c.event, key) for key, c in found.items()} == {
        (Event.INVENTORY_STALE, "n1/inventory"),
        (Event.DEVICE_OVERHEATING, "n1/GPU-n1-0/overheating"),
        (Event.DEVICE_FAILURE, "n1/GPU-n1-1/failure"),
        (Event.COST_THRESHOLD, "cost/daily"),
    }
    assert "XID 79" in found["n1/GPU-n1-1/failure"].summary


def test_a_condition_is_told_when_it_starts_and_resolved_when_it_ends_never_repeated() -> None:
    clock = Clock()
    hot = cache_with(clock, temperature=90)
    sent: list[Notification] = []
    current = {"cache": hot}

    def snapshot() -> InventorySnapshot:
        return current["cache"].snapshot()  # the cache of the moment: the condition comes and goes

    watchdog = Watchdog(
        snapshot=snapshot,
        daily_cost=lambda: None,
        notify=sent.append,
        clock=lambda: T0 + timedelta(minutes=1),
    )
    watchdog.check()
    watchdog.check()
    assert [(n.event, n.resolve) for n in sent] == [(Event.DEVICE_OVERHEATING, False)]
    current["cache"] = cache_with(clock, temperature=60)
    watchdog.check()
    assert [(n.event, n.resolve) for n in sent] == [
        (Event.DEVICE_OVERHEATING, False),
        (Event.DEVICE_OVERHEATING, True),
    ]
    assert sent[0].dedup_key == sent[1].dedup_key  # PagerDuty resolves the incident it opened
    assert all(n.time.tzinfo is UTC for n in sent)
    assert sent[0].time == datetime(2026, 11, 27, 12, 1, tzinfo=UTC)
