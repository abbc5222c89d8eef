"""Holding back: duplicates suppressed within the dedup window (per endpoint, trigger and resolve apart),
the rate limit delaying without dropping, and a full queue dropping and counting."""

from __future__ import annotations

import itertools
import time
from typing import Any

from prometheus_client import CollectorRegistry

from tests.inventory.notify.sender_support import T0, endpoint, note, sample, settings
from tests.inventory.receivers import Reply, eventually


def test_duplicates_inside_the_window_are_suppressed_per_endpoint(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    now = [1000.0]
    first, second = receivers(), receivers()
    notifier = notifiers(
        settings(endpoint("first", first.url), endpoint("second", second.url), dedupWindowSeconds=300),
        clock=lambda: now[0],
    )
    assert notifier.notify(note())
    now[0] += 299
    assert notifier.notify(note())  # suppressed, not lost
    assert sample(registry, "kgm_notifications_dropped_total", reason="duplicate") == 2
    now[0] += 2
    assert notifier.notify(note())  # the window has passed
    assert len(first.wait_for(2)) == len(second.wait_for(2)) == 2
    time.sleep(0.05)
    assert len(first.requests) == len(second.requests) == 2


def test_trigger_resolve_trigger_all_pass_the_dedup_window(receivers: Any, notifiers: Any) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("generic", hook.url)))
    trigger = note()
    for n in (trigger, trigger, trigger.resolved(time=T0), trigger.resolved(time=T0), trigger):
        notifier.notify(n)
    hook.wait_for(3)
    time.sleep(0.05)
    assert [r.json()["resolved"] for r in hook.requests] == [False, True, False]


def test_a_failed_notification_is_not_held_against_its_repeat(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(Reply(400))
    notifier = notifiers(settings(endpoint("generic", hook.url)))
    notifier.notify(note())
    labels = {"endpoint": "generic", "event": "device.failure", "reason": "http_400"}
    eventually(lambda: sample(registry, "kgm_notifications_failed_total", **labels) == 1)
    notifier.notify(note())
    hook.wait_for(1)


def test_rate_limit_delays_excess_requests_and_drops_none(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("generic", hook.url), rateLimitPerMinute=600, rateLimitBurst=1))
    started = time.monotonic()
    assert all(notifier.notify(note(f"key-{i}")) for i in range(5))
    got = hook.wait_for(5, timeout=3.0)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert min(gaps) >= 0.08, gaps  # 10 a second
    assert time.monotonic() - started >= 0.35
    assert sample(registry, "kgm_notifications_dropped_total", reason="queue_full") == 0


def test_a_full_queue_drops_counts_and_returns_false(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("generic", hook.url), queueSize=3), start=False)
    results = [notifier.notify(note(f"key-{i}")) for i in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert sample(registry, "kgm_notifications_dropped_total", reason="queue_full") == 7
    notifier.start()
    assert [r.json()["dedup_key"] for r in hook.wait_for(3)] == ["key-0", "key-1", "key-2"]
