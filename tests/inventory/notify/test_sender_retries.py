"""Retries: which replies are retried (5xx, 429 with Retry-After, timeouts, refused connections) and
which are not (4xx), giving up after maxAttempts, and delivery exactly once and in order through a flaky
receiver."""

from __future__ import annotations

import random
import time
from typing import Any

from prometheus_client import CollectorRegistry

from inventory.notify.formats import Event
from tests.inventory.notify.sender_support import endpoint, note, sample, settings
from tests.inventory.receivers import HANG, Reply, eventually, refused_url


def test_two_500s_then_200_is_delivered_once_after_three_attempts(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(Reply(500), Reply(500))
    notifier = notifiers(settings(endpoint("generic", hook.url), maxAttempts=5))
    notifier.notify(note())
    hook.wait_for(1)
    time.sleep(0.05)
    assert [r.reply.status for r in hook.requests] == [500, 500, 200]
    assert sample(registry, "kgm_notifications_sent_total", endpoint="generic", event="device.failure") == 1
    assert (
        sample(
            registry,
            "kgm_notifications_failed_total",
            endpoint="generic",
            event="device.failure",
            reason="http_500",
        )
        == 0
    )


def test_gives_up_after_max_attempts_and_counts_the_failure(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(default=Reply(503))
    notifier = notifiers(settings(endpoint("generic", hook.url), maxAttempts=4))
    notifier.notify(note())
    labels = {"endpoint": "generic", "event": "device.failure", "reason": "http_503"}
    eventually(lambda: sample(registry, "kgm_notifications_failed_total", **labels) == 1)
    time.sleep(0.05)
    assert len(hook.requests) == 4
    assert sample(registry, "kgm_notifications_sent_total", endpoint="generic", event="device.failure") == 0


def test_a_400_is_not_retried(receivers: Any, notifiers: Any, registry: CollectorRegistry) -> None:
    hook = receivers(default=Reply(400))
    notifier = notifiers(settings(endpoint("generic", hook.url), maxAttempts=5))
    notifier.notify(note())
    labels = {"endpoint": "generic", "event": "device.failure", "reason": "http_400"}
    eventually(lambda: sample(registry, "kgm_notifications_failed_total", **labels) == 1)
    time.sleep(0.1)
    assert len(hook.requests) == 1


def test_429_waits_for_retry_after_before_the_next_attempt(receivers: Any, notifiers: Any) -> None:
    hook = receivers(Reply(429, headers={"Retry-After": "1"}))
    notifier = notifiers(settings(endpoint("generic", hook.url), backoffMs=5, maxBackoffMs=2000))
    notifier.notify(note())
    hook.wait_for(1, timeout=3.0)
    first, second = hook.requests
    assert first.reply.status == 429
    assert second.at - first.at >= 0.95


def test_a_reply_slower_than_the_timeout_is_retried(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(Reply(delay=2.0))
    notifier = notifiers(settings(endpoint("generic", hook.url), timeoutSeconds=0.3))
    started = time.monotonic()
    notifier.notify(note())
    labels = {"endpoint": "generic", "event": "device.failure"}
    eventually(lambda: sample(registry, "kgm_notifications_sent_total", **labels) == 1)
    assert 0.3 <= time.monotonic() - started < 1.5
    first, second = hook.requests
    assert second.at - first.at >= 0.3


def test_an_endpoint_that_never_answers_fails_with_timeout(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    hook = receivers(default=HANG)
    notifier = notifiers(settings(endpoint("generic", hook.url), timeoutSeconds=0.2, maxAttempts=2))
    notifier.notify(note())
    labels = {"endpoint": "generic", "event": "device.failure", "reason": "timeout"}
    eventually(lambda: sample(registry, "kgm_notifications_failed_total", **labels) == 1, timeout=3.0)
    assert len(hook.requests) == 2


def test_connection_refused_is_retried_then_counted(notifiers: Any, registry: CollectorRegistry) -> None:
    notifier = notifiers(settings(endpoint("dead", refused_url()), maxAttempts=3))
    notifier.notify(note())
    labels = {"endpoint": "dead", "event": "device.failure", "reason": "connection"}
    eventually(lambda: sample(registry, "kgm_notifications_failed_total", **labels) == 1)


def test_fifty_notifications_through_a_flaky_receiver_all_arrive_exactly_once_in_order(
    receivers: Any, notifiers: Any, registry: CollectorRegistry
) -> None:
    rng, script, run = random.Random(7), list[Reply](), 0
    while len(script) < 150:  # random 500/503/429s, never more than 3 in a row (the budget is 5 attempts)
        failing = run < 3 and rng.random() < 0.5
        run = run + 1 if failing else 0
        script.append(Reply(rng.choice([500, 503, 429])) if failing else Reply(200))
    hook = receivers(*script)
    notifier = notifiers(settings(endpoint("generic", hook.url), maxAttempts=5, backoffMs=1, maxBackoffMs=5))
    keys = [f"pod-{i}" for i in range(50)]
    assert all(notifier.notify(note(key, event=Event.ALLOCATION_CREATED)) for key in keys)
    hook.wait_for(50, timeout=10.0)
    time.sleep(0.05)
    assert [r.json()["dedup_key"] for r in hook.delivered] == keys
    assert any(r.reply.status != 200 for r in hook.requests)
    labels = {"endpoint": "generic", "event": "allocation.created"}
    assert sample(registry, "kgm_notifications_sent_total", **labels) == 50
