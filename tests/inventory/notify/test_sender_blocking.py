"""The sender never blocks its caller: notify returns at once, from any thread or event loop; a hanging
endpoint delays no other; close drains what it can within its timeout and counts what it leaves."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry

from tests.inventory.notify.sender_support import endpoint, note, sample, settings
from tests.inventory.receivers import HANG, Reply, refused_url


def test_notify_returns_at_once_even_when_every_receiver_hangs(receivers: Any, notifiers: Any) -> None:
    hooks = [receivers(default=HANG) for _ in range(3)]
    notifier = notifiers(
        settings(
            endpoint("slack", hooks[0].url, "slack"),
            endpoint("pagerduty", hooks[1].url, "pagerduty", routingKey="R"),
            endpoint("generic", hooks[2].url),
            timeoutSeconds=5,
        )
    )
    durations = []
    for i in range(100):
        started = time.perf_counter()
        assert notifier.notify(note(f"key-{i}"))
        durations.append(time.perf_counter() - started)
    # Far under the receivers' 5 s timeout: notify never waits on one (a 10 ms bound failed on loaded
    # machines without any notify waiting; timings belong to benchmarks).
    assert max(durations) < 1.0, max(durations)
    for hook in hooks:
        hook.wait_for(1, delivered=False)
    started = time.monotonic()
    notifier.close(timeout=0.2)
    assert time.monotonic() - started < 2.0


def test_a_hanging_endpoint_does_not_delay_a_healthy_one(receivers: Any, notifiers: Any) -> None:
    hanging, healthy = receivers(default=HANG), receivers()
    notifier = notifiers(
        settings(
            endpoint("hanging", hanging.url),
            endpoint("dead", refused_url()),
            endpoint("healthy", healthy.url),
            timeoutSeconds=5,
        )
    )
    started = time.monotonic()
    for i in range(5):
        notifier.notify(note(f"key-{i}"))
    assert len(healthy.wait_for(5, timeout=2.0)) == 5
    assert time.monotonic() - started < 1.0
    assert len(hanging.requests) == 1


def test_notify_from_many_threads_and_from_inside_a_running_event_loop(
    receivers: Any, notifiers: Any
) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("generic", hook.url)))

    def burst(thread: int) -> None:
        for i in range(10):
            assert notifier.notify(note(f"t{thread}-{i}"))

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def inside_a_loop() -> None:
        assert notifier.notify(note("from-a-loop"))
        await notifier.aclose(timeout=2.0)

    asyncio.run(inside_a_loop())
    keys = sorted(r.json()["dedup_key"] for r in hook.delivered)
    assert keys == sorted([f"t{t}-{i}" for t in range(8) for i in range(10)] + ["from-a-loop"])


def test_close_drains_what_is_queued_within_the_timeout(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(default=Reply(delay=1.0))
    notifier = notifiers(settings(endpoint("slow", hook.url), timeoutSeconds=3))
    notifier.notify(note("a"))
    notifier.notify(note("b"))
    notifier.close(timeout=4.0)
    assert [r.json()["dedup_key"] for r in hook.requests] == ["a", "b"]
    assert sample(registry, "kgm_notifications_sent_total", endpoint="slow", event="device.failure") == 2
    assert not notifier.notify(note("c"))
    assert sample(registry, "kgm_notifications_dropped_total", reason="closed") == 1


def test_close_gives_up_on_a_hanging_endpoint_and_counts_what_is_left(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(default=HANG)
    notifier = notifiers(settings(endpoint("hanging", hook.url), timeoutSeconds=5))
    for i in range(4):
        notifier.notify(note(f"key-{i}"))
    hook.wait_for(1, delivered=False)
    started = time.monotonic()
    notifier.close(timeout=0.2)
    assert time.monotonic() - started < 1.0
    assert sample(registry, "kgm_notifications_dropped_total", reason="shutdown") == 4
