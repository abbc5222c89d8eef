"""What each endpoint format (Slack, Teams, PagerDuty, generic) receives, as received over HTTP, and
which events an endpoint subscribed to."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from inventory.notify.formats import Event, Notification, Severity, slack_body
from tests.inventory.notify.sender_support import DETAILS, T0, endpoint, note, settings


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
