"""Least privilege: each component's RBAC is exactly the grants listed here, never a wildcard, and every
workload's ServiceAccount exists and is bound."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from inventory.kube import KubeClient, KubeError
from inventory.kube.transport import Transport
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
from tests.support.kube_emulator import (
    GPUALLOCATIONS,
    GPUNODES,
    GPUQUOTAS,
    NODES,
    PODS,
    KubeEmulator,
    SeenRequest,
)


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
    ("", "", "bindings", "create", "*"),
    *{("", "", "events", v, "*") for v in ("create", "patch")},
    *{("", "gpu.kgm.io", "gpunodes", v, "*") for v in ("list", "watch")},
    *{("", "gpu.kgm.io", "gpuallocations", v, "*") for v in ("list", "watch")},
    ("", "gpu.kgm.io", "gpuallocations/status", "patch", "*"),
    ("", "authentication.k8s.io", "tokenreviews", "create", "*"),  # --api-auth kubernetes
    ("", "authorization.k8s.io", "subjectaccessreviews", "create", "*"),
    *{("", "gpu.kgm.io", "gpuquotas", v, "*") for v in ("list", "watch")},
    ("", "gpu.kgm.io", "gpuquotas/status", "patch", "*"),
    *{("", "", "resourcequotas", v, "*") for v in ("list", "watch")},
    (NAMESPACE, "coordination.k8s.io", "leases", "get", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "update", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "create", "*"),
    (NAMESPACE, "", "pods", "patch", "*"),
}
AGENT_GRANTS = {
    ("", "gpu.kgm.io", "gpunodes", "get", "*"),
    ("", "gpu.kgm.io", "gpunodes", "create", "*"),
    ("", "gpu.kgm.io", "gpunodes/status", "patch", "*"),
}
CERTS_GRANTS = {
    (NAMESPACE, "", "secrets", "get", TLS_SECRET),
    (NAMESPACE, "", "secrets", "patch", TLS_SECRET),
    (NAMESPACE, "", "secrets", "get", "kgm-scheduler-client-tls"),
    (NAMESPACE, "", "secrets", "patch", "kgm-scheduler-client-tls"),
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


# Every call of inventory/kube/'s KubeClient and the ServiceAccount that makes it ("mig-apply": the
# controller in the mig-apply overlay, granted by manifests/components/mig-apply). A new call must be
# added here, and so to the role that needs it.
KUBE_CALLS: dict[str, tuple[str, Callable[[KubeClient], object]]] = {
    "list_pods": ("kgm", lambda k: k.list_pods()),
    "watch_pods": ("kgm", lambda k: next(k.watch_pods("", 1), None)),
    "list_nodes": ("kgm", lambda k: k.list_nodes()),
    "watch_nodes": ("kgm", lambda k: next(k.watch_nodes("", 1), None)),
    "list_gpunodes": ("kgm", lambda k: k.list_gpunodes()),
    "watch_gpunodes": ("kgm", lambda k: next(k.watch_gpunodes("", 1), None)),
    "list_gpuallocations": ("kgm", lambda k: k.list_gpuallocations()),
    "watch_gpuallocations": ("kgm", lambda k: next(k.watch_gpuallocations("", 1), None)),
    "update_gpuallocation_status": (
        "kgm",
        lambda k: k.update_gpuallocation_status("ml", "r1", {"phase": "x"}),
    ),
    "list_gpuquotas": ("kgm", lambda k: k.list_gpuquotas()),
    "watch_gpuquotas": ("kgm", lambda k: next(k.watch_gpuquotas("", 1), None)),
    "update_gpuquota_status": ("kgm", lambda k: k.update_gpuquota_status("ml", "q1", {"pods": 1})),
    "list_resourcequotas": ("kgm", lambda k: k.list_resourcequotas()),
    "watch_resourcequotas": ("kgm", lambda k: next(k.watch_resourcequotas("", 1), None)),
    "get_pod": ("kgm", lambda k: k.get_pod("ml", "p1")),
    "create_binding": ("kgm", lambda k: k.create_binding(namespace="ml", name="p1", uid="u", node="n1")),
    "get_lease": ("kgm", lambda k: k.get_lease(NAMESPACE, "kgm-reconciler")),
    "create_lease": ("kgm", lambda k: k.create_lease(NAMESPACE, {"metadata": {"name": "kgm-reconciler"}})),
    "replace_lease": (
        "kgm",
        lambda k: k.replace_lease(NAMESPACE, "kgm-reconciler", {"metadata": {"name": "kgm-reconciler"}}),
    ),
    "patch_pod_labels": ("kgm", lambda k: k.patch_pod_labels("ml", "p1", {"gpu.kgm.io/role": "leader"})),
    "create_token_review": ("kgm", lambda k: k.create_token_review("t", ["kgm"])),
    "create_subject_access_review": (
        "kgm",
        lambda k: k.create_subject_access_review(
            user="u", resource_attributes={"group": "gpu.kgm.io", "resource": "devices", "verb": "list"}
        ),
    ),
    "create_event": (
        "kgm",
        lambda k: k.create_event(
            "ml",
            {
                "metadata": {"name": "p1.1"},
                "involvedObject": {"kind": "Pod", "namespace": "ml", "name": "p1"},
            },
        ),
    ),
    "patch_event": ("kgm", lambda k: k.patch_event("ml", "p1.1", {"count": 2})),
    "get_gpunode": ("kgm-agent", lambda k: k.get_gpunode("n1")),
    "create_gpunode": ("kgm-agent", lambda k: k.create_gpunode({"metadata": {"name": "n2"}})),
    "update_gpunode_status": ("kgm-agent", lambda k: k.update_gpunode_status("n1", {"devices": []})),
    "patch_node_metadata": ("mig-apply", lambda k: k.patch_node_metadata("n1", labels={"a": "b"})),
    "get_configmap": ("mig-apply", lambda k: k.get_configmap("gpu-operator", "c")),
    "create_configmap": (
        "mig-apply",
        lambda k: k.create_configmap("gpu-operator", {"metadata": {"name": "c"}}),
    ),
    "update_configmap_data": (
        "mig-apply",
        lambda k: k.update_configmap_data("gpu-operator", "c", {"k": "v"}, resource_version="1"),
    ),
}
_NOT_API_CALLS = {"from_environment", "from_url", "close"}
_HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _rbac_of(request: SeenRequest) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) that a request needs, as the API server authorizes it."""
    parts = request.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = "/".join([rest[0], *rest[2:3]])
    verb = _HTTP_VERBS.get(request.method)
    if verb is None:
        verb = "watch" if request.params.get("watch") == "true" else "get" if len(rest) > 1 else "list"
    return group, resource, verb


def test_the_roles_grant_exactly_what_the_kube_calls_need(kube_emulator: KubeEmulator) -> None:
    # KubeClient's own calls and its mixins' (inventory/kube/<concern>.py), not Transport's
    mixins = [c for c in KubeClient.__mro__ if c.__module__.startswith("inventory.kube") and c != Transport]
    public = {name for c in mixins for name in vars(c) if not name.startswith("_")} - _NOT_API_CALLS
    assert public == set(KUBE_CALLS), "classify every KubeClient call here"
    kube_emulator.create(PODS, {"metadata": {"name": "p1", "namespace": "ml"}, "spec": {"containers": []}})
    kube_emulator.create(NODES, {"metadata": {"name": "n1"}})
    kube_emulator.create(GPUNODES, {"metadata": {"name": "n1"}})
    kube_emulator.create(GPUALLOCATIONS, {"metadata": {"name": "r1", "namespace": "ml"}})
    kube_emulator.create(GPUQUOTAS, {"metadata": {"name": "q1", "namespace": "ml"}})
    needed: dict[str, set[tuple[str, str, str]]] = {}
    for account, call in KUBE_CALLS.values():
        before = len(kube_emulator.requests())
        with contextlib.suppress(KubeError):  # a refusal still shows what was asked
            call(kube_emulator.client)
        seen = [r for r in kube_emulator.requests()[before:] if not r.from_harness]
        assert seen
        needed.setdefault(account, set()).update(map(_rbac_of, seen))
    objs = render(INSTALL)
    for account in ("kgm", "kgm-agent"):
        granted = {(group, resource, verb) for _, group, resource, verb, _ in grants(objs, account)}
        assert granted == needed[account], account
    assert ("", "bindings", "create") in needed["kgm"]  # create_namespaced_binding, not pods/binding
