"""What outbound notifications say and where they go: the ``Notification``, the endpoint settings
(parsed from YAML or JSON), and the four bodies a notification is sent as: Slack Block Kit, a Microsoft
Teams MessageCard, a PagerDuty Events API v2 event, a generic JSON object.

Pure: plain data in, plain data out; no client, clock or logger. The sender is ``notify.py``.

    maxAttempts: 5            # HTTP attempts per notification and endpoint
    backoffMs: 500            # first retry delay, x2 each time, jitter, capped at maxBackoffMs (30000)
    queueSize: 1000           # waiting notifications per endpoint
    rateLimitPerMinute: 30    # per endpoint (an endpoint may override it), burst rateLimitBurst (5)
    dedupWindowSeconds: 300
    timeoutSeconds: 5         # whole request; connectTimeoutSeconds: 2
    endpoints:
      - {name: oncall, format: pagerduty, routingKey: R0123, events: [device.failure, inventory.stale]}
      - name: gpu-channel
        format: slack           # slack | teams | pagerduty | generic
        url: https://hooks.slack.com/services/...
        events: ["*"]
        headers: {}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml


class Event(StrEnum):
    ALLOCATION_CREATED = "allocation.created"
    ALLOCATION_RELEASED = "allocation.released"
    ALLOCATION_FAILED = "allocation.failed"
    DEVICE_OVERHEATING = "device.overheating"
    DEVICE_FAILURE = "device.failure"
    INVENTORY_STALE = "inventory.stale"
    COST_THRESHOLD = "cost.threshold"


#: Kinds that describe a condition which later ends (device cooled or recovered, inventory fresh again,
#: spend back under the threshold): their end is sent as ``resolve=True`` with the trigger's dedup_key.
RESOLVABLE = frozenset(
    {Event.DEVICE_OVERHEATING, Event.DEVICE_FAILURE, Event.INVENTORY_STALE, Event.COST_THRESHOLD}
)


class Severity(StrEnum):
    """Also PagerDuty's own severity names (it has ``error`` too, which we do not use)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Format(StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    PAGERDUTY = "pagerduty"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One thing worth telling people about. Endpoints subscribe to ``event``; ``resolve=True`` is the
    end of a RESOLVABLE condition and goes to the same subscribers."""

    event: Event
    severity: Severity
    summary: str
    """One line, shown as the message title (PagerDuty cuts it at 1024 characters)."""
    dedup_key: str
    """Same condition, same key: repeats inside the dedup window are suppressed, PagerDuty groups on it."""
    time: datetime
    """When it happened; timezone-aware."""
    details: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Shown as fields or facts, in this order (node, gpu, namespace, pod, ...)."""
    resolve: bool = False

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("Notification.time must be timezone-aware")
        if not self.dedup_key:
            raise ValueError("Notification.dedup_key must not be empty")
        if self.resolve and self.event not in RESOLVABLE:
            raise ValueError(f"{self.event} has no resolving counterpart")
        object.__setattr__(self, "event", Event(self.event))
        object.__setattr__(self, "severity", Severity(self.severity))
        details = {str(k): str(v) for k, v in self.details.items()}
        object.__setattr__(self, "details", MappingProxyType(details))

    def resolved(self, *, time: datetime, summary: str | None = None) -> Notification:
        """The end of this condition: same event and dedup_key, ``resolve=True``, severity info."""
        return Notification(
            event=self.event,
            severity=Severity.INFO,
            summary=summary or f"Resolved: {self.summary}",
            dedup_key=self.dedup_key,
            time=time,
            details=self.details,
            resolve=True,
        )


def _iso(time: datetime) -> str:
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _title(n: Notification) -> str:
    return f"{'RESOLVED' if n.resolve else n.severity.upper()}: {n.event}"


def _slack_escape(text: str) -> str:
    # Block Kit mrkdwn treats these three as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(n: Notification) -> dict[str, Any]:
    """Block Kit: header, a section with the summary and up to 10 fields (Slack's limit), a context line.
    ``text`` is the fallback shown in notifications."""
    fields = [
        {"type": "mrkdwn", "text": f"*{_slack_escape(k)}*\n{_slack_escape(v)}"[:2000]}
        for k, v in list(n.details.items())[:10]
    ]
    text = {"type": "mrkdwn", "text": _slack_escape(n.summary)[:3000]}
    section: dict[str, Any] = {"type": "section", "text": text}
    if fields:
        section["fields"] = fields
    context = f"{n.event} · {'resolved' if n.resolve else n.severity} · {_iso(n.time)} · key {n.dedup_key}"
    return {
        "text": f"{_title(n)}: {n.summary}"[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _title(n)[:150]}},
            section,
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)}]},
        ],
    }


_TEAMS_COLOURS = {Severity.INFO: "0076D7", Severity.WARNING: "FFA500", Severity.CRITICAL: "D70000"}
_RESOLVED_COLOUR = "2EB886"


def teams_body(n: Notification) -> dict[str, Any]:
    """A legacy actionable MessageCard (what Office 365 connectors and Workflows webhooks accept)."""
    facts = [{"name": "Event", "value": n.event}, {"name": "Severity", "value": n.severity}]
    facts += [{"name": k, "value": v} for k, v in n.details.items()]
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": _RESOLVED_COLOUR if n.resolve else _TEAMS_COLOURS[n.severity],
        "summary": n.summary,
        "title": _title(n),
        "sections": [
            {"activityTitle": n.summary, "activitySubtitle": _iso(n.time), "facts": facts, "markdown": False}
        ],
    }


def pagerduty_body(n: Notification, *, routing_key: str, source: str) -> dict[str, Any]:
    """Events API v2. A resolve carries only routing_key, event_action and dedup_key: PagerDuty matches
    it to the open incident by dedup_key and ignores a payload on resolve."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if n.resolve else "trigger",
        "dedup_key": n.dedup_key[:255],
    }
    if not n.resolve:
        body["payload"] = {
            "summary": n.summary[:1024],
            "source": n.details.get("node", source),
            "severity": str(n.severity),
            "timestamp": _iso(n.time),
            "component": n.details.get("gpu", n.details.get("node", source)),
            "group": n.event.split(".", 1)[0],
            "class": str(n.event),
            "custom_details": dict(n.details),
        }
    return body


def generic_body(n: Notification) -> dict[str, Any]:
    return {
        "event": str(n.event),
        "time": _iso(n.time),
        "severity": str(n.severity),
        "summary": n.summary,
        "details": dict(n.details),
        "dedup_key": n.dedup_key,
        "resolved": n.resolve,
    }


def render(n: Notification, *, fmt: Format, routing_key: str = "", source: str = "kgm") -> dict[str, Any]:
    """The JSON body for one endpoint format."""
    if fmt is Format.SLACK:
        return slack_body(n)
    if fmt is Format.TEAMS:
        return teams_body(n)
    if fmt is Format.PAGERDUTY:
        return pagerduty_body(n, routing_key=routing_key, source=source)
    return generic_body(n)


# -- settings -----------------------------------------------------------------------------------------


class NotificationConfigError(ValueError):
    """Settings that cannot be used, with where and why; never a URL, header value or routing key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    name: str
    """The only thing about an endpoint that logs, errors and metrics show."""
    url: str = field(repr=False)
    """Secret: Slack and Teams webhook URLs carry their credential in the path."""
    format: Format
    events: frozenset[Event]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    """Sent with every request (an Authorization header, say); values are secret."""
    routing_key: str = field(default="", repr=False)
    """PagerDuty integration key (format pagerduty only); secret."""
    source: str = "kgm"
    """PagerDuty ``payload.source`` when the notification names no node."""
    rate_limit_per_minute: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationSettings:
    endpoints: tuple[Endpoint, ...] = ()
    max_attempts: int = 5
    """HTTP attempts per notification and endpoint, the first included."""
    backoff_ms: int = 500
    """Delay before the first retry; doubled for each further one, times a jitter of 0.5..1."""
    max_backoff_ms: int = 30_000
    """Cap on one retry delay, a longer Retry-After included."""
    queue_size: int = 1000
    """Notifications waiting per endpoint; beyond it they are dropped (counted), so memory is bounded."""
    rate_limit_per_minute: float = 30.0
    """Default per endpoint: Slack allows about one message a second per webhook, PagerDuty more."""
    rate_limit_burst: int = 5
    """Requests an idle endpoint may get at once before the rate applies."""
    dedup_window_s: float = 300.0
    """Same endpoint, dedup_key and resolve flag inside this window: sent once."""
    timeout_s: float = 5.0
    """Whole request, connect to last byte of the answer."""
    connect_timeout_s: float = 2.0


_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: document key: (field, integer?, must be > 0 rather than >= 0)
_NUMBERS = {
    "maxAttempts": ("max_attempts", True, True),
    "backoffMs": ("backoff_ms", True, False),
    "maxBackoffMs": ("max_backoff_ms", True, False),
    "queueSize": ("queue_size", True, True),
    "rateLimitPerMinute": ("rate_limit_per_minute", False, True),
    "rateLimitBurst": ("rate_limit_burst", True, True),
    "dedupWindowSeconds": ("dedup_window_s", False, False),
    "timeoutSeconds": ("timeout_s", False, True),
    "connectTimeoutSeconds": ("connect_timeout_s", False, True),
}
_ENDPOINT_KEYS = frozenset(
    {"name", "url", "format", "events", "headers", "routingKey", "source", "rateLimitPerMinute"}
)


def _fail(message: str) -> NotificationConfigError:
    return NotificationConfigError(message)


def _unknown_keys(doc: Mapping[Any, Any], allowed: frozenset[str], at: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise _fail(f"{at}: unknown key(s) {', '.join(unknown)}; expected some of {expected}")


def _number(doc: Mapping[str, Any], key: str, at: str) -> int | float:
    _, integer, positive = _NUMBERS[key]
    value = doc[key]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise _fail(f"{at}: '{key}' must be {kind}, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _fail(f"{at}: '{key}' must be {'greater than 0' if positive else 'at least 0'}, not {value}")
    return value


def _endpoint(item: object, at: str, default_rate: float) -> Endpoint:
    if not isinstance(item, Mapping):
        raise _fail(f"{at}: expected a mapping with name, format, url and events")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{at}: 'name' must be a non-empty string")
    at = f"{at} ({name})"
    _unknown_keys(item, _ENDPOINT_KEYS, at)
    fmt = item.get("format")
    if fmt not in set(Format):
        # The values a user wrote are never quoted: a secret pasted into the wrong field would reach the log.
        raise _fail(f"{at}: 'format' must be one of {', '.join(Format)}")
    fmt = Format(fmt)
    url = item.get("url", _PAGERDUTY_URL if fmt is Format.PAGERDUTY else None)
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"{at}: 'url' must be an http:// or https:// URL with a host")  # never quote it
    events = item.get("events")
    if not isinstance(events, Sequence) or isinstance(events, str) or not events:
        raise _fail(f"{at}: 'events' must be a non-empty list of event names (or [\"*\"])")
    for position, event in enumerate(events):
        if event != "*" and event not in set(Event):
            raise _fail(f"{at}: events[{position}] is not a known event; known: {', '.join(Event)} or *")
    headers = item.get("headers", {})
    if not isinstance(headers, Mapping):
        raise _fail(f"{at}: 'headers' must be a mapping of header name to string value")
    for position, (key, value) in enumerate(headers.items()):
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise _fail(f"{at}: the name of header {position + 1} is not a valid HTTP header name")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise _fail(f"{at}: header {key!r} must have a single-line string value")  # never quote it
    routing_key = item.get("routingKey", "")
    if fmt is Format.PAGERDUTY and (not isinstance(routing_key, str) or not routing_key.strip()):
        raise _fail(f"{at}: 'routingKey' (the integration key) is required for format pagerduty")
    if fmt is not Format.PAGERDUTY and routing_key:
        raise _fail(f"{at}: 'routingKey' is only used with format pagerduty")
    source = item.get("source", "kgm")
    if not isinstance(source, str) or not source.strip():
        raise _fail(f"{at}: 'source' must be a non-empty string")
    return Endpoint(
        name=name.strip(),
        url=url,
        format=fmt,
        events=frozenset(Event) if "*" in events else frozenset(Event(e) for e in events),
        headers=MappingProxyType(dict(headers)),
        routing_key=routing_key.strip(),
        source=source.strip(),
        rate_limit_per_minute=(
            float(_number(item, "rateLimitPerMinute", at)) if "rateLimitPerMinute" in item else default_rate
        ),
    )


def parse_settings(document: object, *, where: str = "notifications") -> NotificationSettings:
    """Settings from a parsed YAML/JSON document, or NotificationConfigError naming what is wrong.
    An empty document means no endpoints (notifications off)."""
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise _fail(f"{where}: expected a mapping with 'endpoints' and optional limits")
    _unknown_keys(document, frozenset({"endpoints", *_NUMBERS}), where)
    numbers: dict[str, Any] = {_NUMBERS[k][0]: _number(document, k, where) for k in _NUMBERS if k in document}
    raw = document.get("endpoints", [])
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise _fail(f"{where}: 'endpoints' must be a list")
    rate = float(numbers.get("rate_limit_per_minute", 30.0))  # NotificationSettings' default
    endpoints = tuple(_endpoint(item, f"{where}.endpoints[{i}]", rate) for i, item in enumerate(raw))
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise _fail(f"{where}: endpoint names must be unique; listed more than once: {', '.join(twice)}")
    settings = NotificationSettings(endpoints=endpoints, **numbers)
    if settings.max_backoff_ms < settings.backoff_ms:
        raise _fail(f"{where}: 'maxBackoffMs' must be at least 'backoffMs'")
    return settings


def load_settings(path: str | Path) -> NotificationSettings:
    """Settings from a YAML or JSON file, or NotificationConfigError."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise _fail(f"cannot read notification settings {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        # The parser's message quotes the text, which holds webhook URLs: keep only where it broke.
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise _fail(f"notification settings {path} are not valid YAML or JSON{line}") from None
    return parse_settings(document, where=str(path))
