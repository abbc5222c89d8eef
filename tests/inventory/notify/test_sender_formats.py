"""Outbound notifications against real HTTP receivers on loopback (tests/inventory/receivers.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inventory.notify.formats import (
    Event,
    Notification,
    NotificationConfigError,
    NotificationSettings,
    Severity,
    load_settings,
    parse_settings,
    slack_body,
)
from inventory.notify.sender import Notifier
from tests.inventory.receivers import HANG, OK, Receiver, Reply, eventually, refused_url

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DETAILS = {"node": "node-a", "gpu": "GPU-1", "xid": "79"}


def note(key: str = "node-a/GPU-1", *, event: Event = Event.DEVICE_FAILURE, **kw: Any) -> Notification:
    return Notification(
        event=event,
        severity=Severity.CRITICAL,
        summary="GPU-1 on node-a fell off the bus",
        dedup_key=key,
        time=T0,
        details=DETAILS,
        **kw,
    )


def endpoint(
    name: str, url: str, fmt: str = "generic", *, events: tuple[str, ...] = ("*",), **extra: Any
) -> Any:
    return {"name": name, "url": url, "format": fmt, "events": list(events), **extra}


def settings(*endpoints: Any, **limits: Any) -> NotificationSettings:
    """Fast settings for tests: tiny backoffs and timeouts, a rate limit that never bites."""
    document = {
        "maxAttempts": 3,
        "backoffMs": 5,
        "maxBackoffMs": 20,
        "timeoutSeconds": 0.5,
        "connectTimeoutSeconds": 0.5,
        "rateLimitPerMinute": 60_000,
        "rateLimitBurst": 1000,
        **limits,
        "endpoints": list(endpoints),
    }
    return parse_settings(document)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture()
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*script: Reply, default: Reply = OK, path: str = "/hook") -> Receiver:
        made.append(Receiver(*script, default=default, path=path))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture()
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture()
def notifiers(registry: CollectorRegistry, receivers: Any) -> Iterator[Callable[..., Notifier]]:
    """Closed before the receivers (it depends on them), so no request is left in flight."""
    made: list[Notifier] = []

    def make(config: NotificationSettings, *, start: bool = True, **kw: Any) -> Notifier:
        kw.setdefault("registry", registry)
        made.append(Notifier(config, **kw))
        return made[-1].start() if start else made[-1]

    yield make
    for notifier in made:
        notifier.close(timeout=0.5)


# -- bodies as received --------------------------------------------------------------------------------


def test_slack_endpoint_receives_block_kit_header_section_and_fields(receivers: Any, notifiers: Any) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("slack", hook.url, "slack", headers={"X-Team": "gpu"})))
    assert notifier.notify(note())
    [got] = hook.wait_for(1)
    body = got.json()
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-team"] == "gpu"
    assert body["text"] == "CRITICAL: device.failure: GPU-1 on node-a fell off the bus"
    header, section, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "CRITICAL: device.failure"}}
    assert section["type"] == "section"
    assert section["text"] == {"type": "mrkdwn", "text": "GPU-1 on node-a fell off the bus"}
    assert section["fields"] == [
        {"type": "mrkdwn", "text": "*node*\nnode-a"},
        {"type": "mrkdwn", "text": "*gpu*\nGPU-1"},
        {"type": "mrkdwn", "text": "*xid*\n79"},
    ]
    assert context["type"] == "context"
    assert "2025-03-01T12:00:00Z" in context["elements"][0]["text"]


def test_slack_escapes_control_characters_and_keeps_to_ten_fields() -> None:
    body = slack_body(
        Notification(
            event=Event.COST_THRESHOLD,
            severity=Severity.WARNING,
            summary="team <a> & <b> over budget",
            dedup_key="cost/a",
            time=T0,
            details={f"k{i}": str(i) for i in range(12)},
        )
    )
    assert body["blocks"][1]["text"]["text"] == "team &lt;a&gt; &amp; &lt;b&gt; over budget"
    assert len(body["blocks"][1]["fields"]) == 10


def test_teams_endpoint_receives_a_message_card_with_facts(receivers: Any, notifiers: Any) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("teams", hook.url, "teams")))
    assert notifier.notify(note())
    body = hook.wait_for(1)[0].json()
    assert body["@type"] == "MessageCard"
    assert body["@context"] == "https://schema.org/extensions"
    assert body["themeColor"] == "D70000"
    assert body["summary"] == "GPU-1 on node-a fell off the bus"
    [section] = body["sections"]
    assert section["activitySubtitle"] == "2025-03-01T12:00:00Z"
    assert section["facts"] == [
        {"name": "Event", "value": "device.failure"},
        {"name": "Severity", "value": "critical"},
        {"name": "node", "value": "node-a"},
        {"name": "gpu", "value": "GPU-1"},
        {"name": "xid", "value": "79"},
    ]


def test_pagerduty_trigger_then_resolve_share_the_dedup_key(receivers: Any, notifiers: Any) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("oncall", hook.url, "pagerduty", routingKey="R0UTING")))
    trigger = note()
    assert notifier.notify(trigger)
    assert notifier.notify(trigger.resolved(time=T0 + timedelta(minutes=5)))
    first, second = (r.json() for r in hook.wait_for(2))
    assert first == {
        "routing_key": "R0UTING",
        "event_action": "trigger",
        "dedup_key": "node-a/GPU-1",
        "payload": {
            "summary": "GPU-1 on node-a fell off the bus",
            "source": "node-a",
            "severity": "critical",
            "timestamp": "2025-03-01T12:00:00Z",
            "component": "GPU-1",
            "group": "device",
            "class": "device.failure",
            "custom_details": DETAILS,
        },
    }
    assert second == {"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": "node-a/GPU-1"}


def test_generic_endpoint_receives_event_time_severity_summary_details(
    receivers: Any, notifiers: Any
) -> None:
    hook = receivers()
    notifier = notifiers(settings(endpoint("generic", hook.url)))
    assert notifier.notify(note())
    assert hook.wait_for(1)[0].json() == {
        "event": "device.failure",
        "time": "2025-03-01T12:00:00Z",
        "severity": "critical",
        "summary": "GPU-1 on node-a fell off the bus",
        "details": DETAILS,
        "dedup_key": "node-a/GPU-1",
        "resolved": False,
    }


def test_endpoint_gets_only_the_events_it_subscribed_to(receivers: Any, notifiers: Any) -> None:
    alloc, devices = receivers(), receivers()
    notifier = notifiers(
        settings(
            endpoint("alloc", alloc.url, events=("allocation.created",)),
            endpoint("devices", devices.url, events=("device.failure", "device.overheating")),
        )
    )
    notifier.notify(note("a", event=Event.ALLOCATION_CREATED))
    notifier.notify(note("b", event=Event.DEVICE_FAILURE))
    assert [r.json()["dedup_key"] for r in alloc.wait_for(1)] == ["a"]
    assert [r.json()["dedup_key"] for r in devices.wait_for(1)] == ["b"]
    time.sleep(0.05)
    assert len(alloc.requests) == len(devices.requests) == 1


# -- retries -------------------------------------------------------------------------------------------


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


# -- never blocking, isolation --------------------------------------------------------------------------


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
    assert max(durations) < 0.010, max(durations)
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


# -- dedup, rate limit, queue --------------------------------------------------------------------------


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


# -- shutdown ------------------------------------------------------------------------------------------


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


# -- secrets -------------------------------------------------------------------------------------------


def test_logs_name_endpoints_but_never_urls_headers_or_routing_keys(
    receivers: Any, notifiers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    slack = receivers(path="/services/T0SECRET/B0SECRET/XOXSLACKSECRET")
    teams = receivers(Reply(500), path="/webhookb2/TEAMSSECRET?sig=SIGSECRET")
    failing = receivers(default=Reply(401))
    config = settings(
        endpoint("slack-alerts", slack.url, "slack"),
        endpoint("teams-alerts", teams.url, "teams"),
        endpoint("auth-hook", failing.url, headers={"Authorization": "Bearer TOKENSECRET"}),
        endpoint("pd-oncall", refused_url(), "pagerduty", routingKey="ROUTINGSECRET"),
        queueSize=1,
    )
    assert "SECRET" not in repr(config)
    notifier = notifiers(config, start=False)
    notifier.notify(note("a"))
    notifier.notify(note("b"))  # dropped: queue full
    notifier.start()
    slack.wait_for(1)
    teams.wait_for(1)
    failing.wait_for(1, delivered=False)
    notifier.close(timeout=2.0)
    logged = caplog.text + "".join(repr(vars(record)) for record in caplog.records)
    for secret in ("T0SECRET", "XOXSLACKSECRET", "TEAMSSECRET", "SIGSECRET", "TOKENSECRET", "ROUTINGSECRET"):
        assert secret not in logged
    assert "127.0.0.1:" + str(slack.port) + "/services" not in logged
    events = {(getattr(r, "event", None), getattr(r, "endpoint", None)) for r in caplog.records}
    assert ("notify.failed", "auth-hook") in events
    assert ("notify.failed", "pd-oncall") in events
    assert ("notify.retry", "teams-alerts") in events
    assert ("notify.dropped", "slack-alerts") in events


# -- settings ------------------------------------------------------------------------------------------


def test_settings_defaults_and_per_endpoint_rate_override() -> None:
    config = parse_settings(
        {
            "endpoints": [
                {
                    "name": "pd",
                    "format": "pagerduty",
                    "routingKey": "R",
                    "events": ["device.failure"],
                    "rateLimitPerMinute": 120,
                },
                {"name": "all", "format": "generic", "url": "https://example.test/hook", "events": ["*"]},
            ]
        }
    )
    assert (config.max_attempts, config.backoff_ms, config.max_backoff_ms) == (5, 500, 30_000)
    assert (config.queue_size, config.rate_limit_per_minute, config.dedup_window_s) == (1000, 30.0, 300.0)
    assert (config.timeout_s, config.connect_timeout_s) == (5.0, 2.0)
    pd, everything = config.endpoints
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert pd.rate_limit_per_minute == 120
    assert everything.rate_limit_per_minute == 30
    assert everything.events == frozenset(Event)
    assert parse_settings(None).endpoints == ()


GOOD = {"name": "hook", "format": "generic", "url": "https://hooks.example.test/T0SECRET", "events": ["*"]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping"),
        ({"maxAttempt": 3}, "unknown key(s) maxAttempt"),
        ({"maxAttempts": 0}, "'maxAttempts' must be greater than 0"),
        ({"maxAttempts": "5"}, "'maxAttempts' must be an integer"),
        ({"maxAttempts": True}, "'maxAttempts' must be an integer"),
        ({"backoffMs": -1}, "'backoffMs' must be at least 0"),
        ({"rateLimitPerMinute": 0}, "'rateLimitPerMinute' must be greater than 0"),
        ({"dedupWindowSeconds": float("inf")}, "'dedupWindowSeconds' must be at least 0"),
        ({"backoffMs": 5000, "maxBackoffMs": 1000}, "'maxBackoffMs' must be at least 'backoffMs'"),
        ({"endpoints": {"name": "x"}}, "'endpoints' must be a list"),
        ({"endpoints": ["hook"]}, "endpoints[0]: expected a mapping"),
        ({"endpoints": [{**GOOD, "name": ""}]}, "endpoints[0]: 'name' must be a non-empty string"),
        ({"endpoints": [{**GOOD, "format": "email"}]}, "endpoints[0] (hook): 'format' must be one of slack"),
        (
            {"endpoints": [{**GOOD, "url": "ftp://x/T0SECRET"}]},
            "(hook): 'url' must be an http:// or https://",
        ),
        ({"endpoints": [{k: v for k, v in GOOD.items() if k != "url"}]}, "(hook): 'url' must be"),
        ({"endpoints": [{**GOOD, "events": []}]}, "'events' must be a non-empty list"),
        ({"endpoints": [{**GOOD, "events": ["gpu.melted"]}]}, "unknown event 'gpu.melted'"),
        ({"endpoints": [{**GOOD, "headers": ["x"]}]}, "'headers' must be a mapping"),
        ({"endpoints": [{**GOOD, "headers": {"Bad Name": "T0SECRET"}}]}, "header name 'Bad Name' is not"),
        ({"endpoints": [{**GOOD, "headers": {"X-Token": 7}}]}, "header 'X-Token' must have a single-line"),
        ({"endpoints": [{**GOOD, "format": "pagerduty"}]}, "'routingKey' (the integration key) is required"),
        ({"endpoints": [{**GOOD, "routingKey": "T0SECRET"}]}, "'routingKey' is only used with format"),
        ({"endpoints": [{**GOOD, "colour": "red"}]}, "(hook): unknown key(s) colour"),
        ({"endpoints": [GOOD, GOOD]}, "endpoint names must be unique; listed more than once: hook"),
    ],
)
def test_settings_errors_say_where_and_why_without_secrets(document: object, message: str) -> None:
    with pytest.raises(NotificationConfigError) as caught:
        parse_settings(document)
    assert message in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_settings_load_from_yaml_and_bad_yaml_is_not_echoed(tmp_path: Path) -> None:
    good = tmp_path / "notifications.yaml"
    good.write_text(
        "maxAttempts: 2\nendpoints:\n"
        "  - {name: chat, format: slack, url: 'https://hooks.slack.com/services/T0SECRET',\n"
        "     events: [cost.threshold]}\n"
    )
    config = load_settings(good)
    assert config.max_attempts == 2
    assert config.endpoints[0].events == frozenset({Event.COST_THRESHOLD})
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  - {name: chat, url: https://hooks.slack.com/T0SECRET\n")
    with pytest.raises(NotificationConfigError, match=r"not valid YAML or JSON \(line") as caught:
        load_settings(bad)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(NotificationConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time": datetime(2025, 3, 1)}, "timezone-aware"),
        ({"dedup_key": ""}, "dedup_key must not be empty"),
        ({"event": Event.ALLOCATION_CREATED, "resolve": True}, "has no resolving counterpart"),
        ({"severity": "fatal"}, "'fatal' is not a valid Severity"),
    ],
)
def test_notification_rejects_what_cannot_be_sent(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "event": Event.DEVICE_FAILURE,
        "severity": Severity.CRITICAL,
        "summary": "s",
        "dedup_key": "k",
        "time": T0,
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        Notification(**fields)
