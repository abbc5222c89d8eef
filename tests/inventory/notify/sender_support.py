"""Notifications, endpoints and settings for the sender's tests, and reading its metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from inventory.notify.formats import Event, Notification, NotificationSettings, Severity, parse_settings

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
