"""The NetworkPolicies: each selects a workload; the controller accepts its port from anywhere and
reaches only the API server, DNS and the database; the agent and the certificate Job accept nothing
and reach only the API server."""

from __future__ import annotations

import pytest

from tests.manifests.rendering import (
    INSTALL,
    WORKLOAD_KINDS,
    Obj,
    find,
    of_kind,
    render,
    service_port,
)


def selected(policy: Obj, objs: list[Obj]) -> list[Obj]:
    wanted = policy["spec"]["podSelector"]["matchLabels"].items()
    return [
        o
        for o in objs
        if o["kind"] in WORKLOAD_KINDS and wanted <= o["spec"]["template"]["metadata"]["labels"].items()
    ]


def ports(rule: Obj) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}


API_SERVER = {(443, "TCP"), (6443, "TCP")}


def test_every_network_policy_selects_a_workload() -> None:
    objs = render(INSTALL)
    for policy in of_kind(objs, "NetworkPolicy"):
        assert selected(policy, objs), policy["metadata"]["name"]


def test_the_controller_accepts_its_port_from_anywhere_and_reaches_only_api_dns_and_database() -> None:
    objs = render(INSTALL)
    policy = find(objs, "NetworkPolicy", "kgm")
    assert [o["metadata"]["name"] for o in selected(policy, objs)] == ["kgm"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert "from" not in ingress, "the API server's source address varies by provider: all sources"
    assert ports(ingress) == {(service_port()[1]["port"], "TCP")}
    egress = policy["spec"]["egress"]
    assert {p for rule in egress for p in ports(rule)} == API_SERVER | {
        (53, "UDP"),
        (53, "TCP"),
        (5432, "TCP"),
    }


@pytest.mark.parametrize("name", ["kgm-agent", "kgm-certs"])
def test_the_agent_and_the_job_reach_the_api_server_only_and_accept_nothing(name: str) -> None:
    objs = render(INSTALL)
    policy = find(objs, "NetworkPolicy", name)
    assert [o["metadata"]["name"] for o in selected(policy, objs)] == [name]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"] == []
    (egress,) = policy["spec"]["egress"]
    assert ports(egress) == API_SERVER
