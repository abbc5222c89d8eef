"""The monitoring kustomization: the ServiceMonitor scrapes the Service over verified HTTPS, Grafana's
sidecar picks up the dashboard, the alerts the issue names exist and every runbook link resolves."""

from __future__ import annotations

import json
import re

from kgm.certs import service_dns_names
from tests.manifests.rendering import (
    MONITORING,
    NAMESPACE,
    SERVICE,
    TLS_SECRET,
    find,
    render,
    service_port,
)
from tests.support.data import REPO


def test_the_service_monitor_scrapes_the_service_over_verified_https() -> None:
    monitor = find(render(MONITORING), "ServiceMonitor", "kgm")
    service, port = service_port()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (port["name"], "/metrics", "https")
    tls = endpoint["tlsConfig"]
    assert tls["serverName"] in service_dns_names(SERVICE, NAMESPACE)
    assert tls["ca"]["secret"] == {"name": TLS_SECRET, "key": "ca.crt"}
    assert "insecureSkipVerify" not in tls


def test_the_dashboard_config_map_is_picked_up_by_grafanas_sidecar() -> None:
    config_map = find(render(MONITORING), "ConfigMap", "kgm-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = config_map["data"]
    assert name.endswith(".json")
    dashboard = json.loads(config_map["data"][name])
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in (
        "GPUs",
        "Healthy GPUs",
        "Active allocations",
        "Cost rate",
        "GPU utilization by node",
        "GPU temperature",
        "MIG instances allocated by profile",
        "Cost trend",
        "Admission latency",
        "Extender latency p99 by verb",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alerts_named_in_the_issue_exist() -> None:
    rule = find(render(MONITORING), "PrometheusRule", "kgm")
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "GPUHighTemperature",
        "GPUHighUtilization",
        "GPUAllocationFailures",
        "KgmControllerDown",
        "MIGInstancesLow",
        "GPUDailyCostHigh",
        "GPUNodeInventoryStale",
        "GPUUnhealthy",
        "KgmWebhookErrors",
        "KgmExtenderLatencyOverBudget",
    } <= alerts


def test_every_runbook_annotation_points_at_a_section_of_the_operations_guide() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("#")
    }
    rule = find(render(MONITORING), "PrometheusRule", "kgm")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            runbook = r["annotations"].get("runbook")
            if runbook:
                page, _, anchor = runbook.partition("#")
                assert page == "docs/operations.md" and anchor in anchors, (r["alert"], runbook)
