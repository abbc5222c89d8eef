"""Least privilege: each component's RBAC is exactly the grants listed here, never a wildcard, and every
workload's ServiceAccount exists and is bound."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.rendering import (
    INSTALL,
    NAMESPACE,
    TLS_SECRET,
    VARIANTS,
    WEBHOOK,
    WORKLOAD_KINDS,
    Obj,
    find,
    of_kind,
    pod_spec,
    render,
)
from tests.support.data import REPO


def grants(objs: list[Obj], account: str) -> set[tuple[str, str, str, str, str]]:
    """(namespace or "", apiGroup, resource, verb, resourceName or "*") granted to a ServiceAccount."""
    found = set()
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "")
        if ref["name"].startswith("system:") or ref["name"] == "extension-apiserver-authentication-reader":
            found.add((namespace, "builtin", ref["name"], "*", "*"))
            continue
        role = find(objs, ref["kind"], ref["name"])
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames", ["*"]):
                            found.add((namespace, group, resource, verb, name))
    return found


CONTROLLER_GRANTS = {
    *{("", "", r, v, "*") for r in ("pods", "nodes") for v in ("list", "watch")},
    ("", "", "pods", "get", "*"),
    ("", "", "pods/binding", "create", "*"),
    ("", "", "bindings", "create", "*"),
    ("", "", "events", "create", "*"),
    ("", "events.k8s.io", "events", "create", "*"),
    *{("", "gpu.kgm.io", "gpunodes", v, "*") for v in ("get", "list", "watch")},
    *{("", "gpu.kgm.io", "gpuallocations", v, "*") for v in ("list", "watch")},
    ("", "gpu.kgm.io", "gpuallocations/status", "patch", "*"),
    (NAMESPACE, "coordination.k8s.io", "leases", "get", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "update", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "create", "*"),
}
AGENT_GRANTS = {
    ("", "gpu.kgm.io", "gpunodes", "get", "*"),
    ("", "gpu.kgm.io", "gpunodes", "create", "*"),
    ("", "gpu.kgm.io", "gpunodes/status", "patch", "*"),
    ("", "gpu.kgm.io", "gpunodes/status", "update", "*"),
}
CERTS_GRANTS = {
    (NAMESPACE, "", "secrets", "get", TLS_SECRET),
    (NAMESPACE, "", "secrets", "patch", TLS_SECRET),
    (NAMESPACE, "", "secrets", "create", "*"),
    (NAMESPACE, "apps", "deployments", "patch", "kgm-scheduler"),
    ("", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", WEBHOOK),
    ("", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", WEBHOOK),
}


@pytest.mark.parametrize(
    ("account", "expected"),
    [("kgm", CONTROLLER_GRANTS), ("kgm-agent", AGENT_GRANTS), ("kgm-certs", CERTS_GRANTS)],
)
def test_each_component_gets_exactly_its_grants(account: str, expected: set[Any]) -> None:
    assert grants(render(INSTALL), account) == expected


def test_the_lease_the_controller_may_renew_is_the_one_it_elects_with() -> None:
    source = (REPO / "kgm" / "assembly.py").read_text()
    assert 'name="kgm-reconciler"' in source
    assert "namespace=settings.namespace" in source
    # The environment is read once, by the command line, into the settings.
    assert 'environ.get("POD_NAMESPACE", "kgm-system")' in (REPO / "kgm" / "cli.py").read_text()


def test_no_role_grants_wildcards_or_secrets_to_the_long_running_components() -> None:
    objs = render(INSTALL)
    for role in of_kind(objs, "Role") + of_kind(objs, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
    for account in ("kgm", "kgm-agent", "kgm-scheduler"):
        assert not [g for g in grants(objs, account) if g[2] == "secrets"], account


def test_every_workload_service_account_exists_and_is_bound() -> None:
    for variant in ("install", "cert-manager"):
        objs = render(VARIANTS[variant])
        for workload in (o for o in objs if o["kind"] in WORKLOAD_KINDS):
            account = pod_spec(workload)["serviceAccountName"]
            find(objs, "ServiceAccount", account)
            assert grants(objs, account), f"{account} is bound to nothing"
