"""The sender's logs name endpoints but never show their URLs, headers or routing keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.inventory.notify.sender_support import endpoint, note, settings
from tests.inventory.receivers import Reply, refused_url


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
