"""Notification settings (defaults, validation errors that say where and why without secrets, loading
from YAML) and the notifications that cannot be sent at all."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from inventory.notify.formats import (
    Event,
    Notification,
    NotificationConfigError,
    Severity,
    load_settings,
    parse_settings,
)
from tests.inventory.notify.sender_support import T0


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
        ({"endpoints": [{**GOOD, "events": ["gpu.melted"]}]}, "events[0] is not a known event"),
        ({"endpoints": [{**GOOD, "headers": ["x"]}]}, "'headers' must be a mapping"),
        ({"endpoints": [{**GOOD, "headers": {"Bad Name": "T0SECRET"}}]}, "the name of header 1 is not"),
        # A secret pasted into the wrong field is not quoted back either.
        ({"endpoints": [{**GOOD, "format": "xoxb-T0SECRET"}]}, "(hook): 'format' must be one of slack"),
        ({"endpoints": [{**GOOD, "events": ["*", "T0SECRET"]}]}, "events[1] is not a known event"),
        ({"endpoints": [{**GOOD, "headers": {"Bearer T0SECRET": "x"}}]}, "the name of header 1 is not"),
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
