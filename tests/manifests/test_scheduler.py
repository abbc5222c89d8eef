"""The kgm-scheduler manifests: valid Kubernetes objects, and a KubeSchedulerConfiguration that calls
our extender with exactly the field names kube-scheduler's strict decoder accepts.

The embedded configuration is not an API object, so the OpenAPI schemas cannot check it; this module
checks it against the JSON tags of ``k8s.io/kube-scheduler/config/v1`` (types.go, ``Extender``,
``ExtenderTLSConfig``, ``ExtenderManagedResource``) and against our own catalogue and webhook.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
import yaml

from tests.support.data import REPO
from tests.support.k8s_openapi import default_schemas
from webhook.settings import WebhookSettings

SCHEDULER_MANIFESTS = sorted((REPO / "manifests" / "scheduler").rglob("*.yaml"))
WEBHOOK_MANIFEST = REPO / "manifests" / "webhook" / "mutating-webhook.yaml"
MIG_PROFILES = REPO / "inventory" / "data" / "mig-profiles.json"

NAMESPACE = "kgm-system"
SERVICE_ACCOUNT = "kgm-scheduler"
CA_SECRET = "kgm-webhook-tls"
CLIENT_SECRET = "kgm-scheduler-client-tls"

# JSON tags of k8s.io/kube-scheduler/config/v1 `Extender` (kube-scheduler decodes its config strictly:
# an unknown or wrongly cased key, e.g. the pre-v1 `enableHttps`, stops it at start-up).
EXTENDER_FIELDS = frozenset(
    {
        "urlPrefix",
        "filterVerb",
        "preemptVerb",
        "prioritizeVerb",
        "weight",
        "bindVerb",
        "enableHTTPS",
        "tlsConfig",
        "httpTimeout",
        "nodeCacheCapable",
        "managedResources",
        "ignorable",
    }
)
# k8s.io/kube-scheduler/extender/v1 `ExtenderTLSConfig` and config/v1 `ExtenderManagedResource`.
TLS_CONFIG_FIELDS = frozenset(
    {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
)
MANAGED_RESOURCE_FIELDS = frozenset({"name", "ignoredByScheduler"})
# k8s.io/component-base/config/v1alpha1 `LeaderElectionConfiguration`.
LEADER_ELECTION_FIELDS = frozenset(
    {
        "leaderElect",
        "leaseDuration",
        "renewDeadline",
        "retryPeriod",
        "resourceLock",
        "resourceName",
        "resourceNamespace",
    }
)
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


# ------------------------------------------------------------------------------------------ loading


@cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    found = []
    for path in SCHEDULER_MANIFESTS:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("kind") != "Kustomization":
                found.append((f"{path.name}#{i}", doc))
    return tuple(found)


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def the(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


def deployment() -> dict[str, Any]:
    return the("Deployment", "kgm-scheduler")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return dict(only)


def config_path() -> str:
    (flag,) = [arg for arg in container()["command"] if arg.startswith("--config=")]
    return str(flag.removeprefix("--config="))


def mounted_file(path: str) -> dict[str, Any]:
    """The pod volume that provides the file at `path` (via a mount and the volume's `items`)."""
    for mount in container()["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
            return {"volume": volume, "relative": path.removeprefix(prefix)}
    raise AssertionError(f"nothing is mounted at {path}")


@cache
def scheduler_config() -> dict[str, Any]:
    """The KubeSchedulerConfiguration that the Deployment's --config points at, parsed."""
    source = mounted_file(config_path())
    config_map = source["volume"]["configMap"]
    (item,) = [i for i in config_map["items"] if i["path"] == source["relative"]]
    text = the("ConfigMap", config_map["name"])["data"][item["key"]]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def extender() -> dict[str, Any]:
    (only,) = scheduler_config()["extenders"]
    return dict(only)


def mixed_strategy_mig_resources() -> set[str]:
    """Every `nvidia.com/mig-*` resource name the MIG catalogue knows (device plugin, mixed strategy)."""
    tables = json.loads(MIG_PROFILES.read_text())
    names = {profile["k8s_resource_mixed_strategy"] for gpu in tables["gpus"] for profile in gpu["profiles"]}
    assert names, f"no MIG profiles in {MIG_PROFILES}"
    return names


# ---------------------------------------------------------------------------- Kubernetes objects


@pytest.mark.parametrize(("name", "manifest"), documents(), ids=[n for n, _ in documents()])
def test_every_document_is_a_valid_kubernetes_object(name: str, manifest: dict[str, Any]) -> None:
    default_schemas().validate_resource(manifest)


def test_namespaced_objects_live_in_kgm_system_except_the_authentication_reader_binding() -> None:
    for name, doc in documents():
        if doc["kind"] in ("ClusterRoleBinding", "ClusterRole"):
            assert "namespace" not in doc["metadata"], name
        elif doc["metadata"]["name"] == "kgm-scheduler-extension-apiserver-authentication-reader":
            assert doc["metadata"]["namespace"] == "kube-system", name
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, name


# ------------------------------------------------------------------------- the scheduler config


def test_the_config_is_a_v1_kube_scheduler_configuration_with_one_kgm_profile() -> None:
    config = scheduler_config()
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert [profile["schedulerName"] for profile in config["profiles"]] == ["kgm-scheduler"]
    assert config.get("percentageOfNodesToScore") == 100


def test_the_profile_is_the_scheduler_name_the_webhook_writes_into_gpu_pods() -> None:
    (profile,) = scheduler_config()["profiles"]
    assert profile["schedulerName"] == WebhookSettings().scheduler_name


def test_the_extender_uses_only_v1_field_names_with_their_exact_casing() -> None:
    ext = extender()
    assert set(ext) <= EXTENDER_FIELDS, sorted(set(ext) - EXTENDER_FIELDS)
    assert set(ext["tlsConfig"]) <= TLS_CONFIG_FIELDS, sorted(set(ext["tlsConfig"]) - TLS_CONFIG_FIELDS)
    for resource in ext["managedResources"]:
        assert set(resource) == MANAGED_RESOURCE_FIELDS, resource
    assert set(scheduler_config()["leaderElection"]) <= LEADER_ELECTION_FIELDS


def test_the_extender_names_all_four_verbs_under_the_controller_service() -> None:
    ext = extender()
    assert ext["urlPrefix"] == "https://kgm-leader.kgm-system.svc:8443/extender"
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"], ext["preemptVerb"]) == (
        "filter",
        "prioritize",
        "bind",
        "preempt",
    )


def test_the_extender_url_is_the_service_the_webhook_is_served_by() -> None:
    (hook,) = yaml.safe_load(WEBHOOK_MANIFEST.read_text())["webhooks"]
    service = hook["clientConfig"]["service"]
    # Through the Service kgm-leader (the leader's pod only), verified as the webhook's Service.
    host = f"{service['name']}-leader.{service['namespace']}.svc:{service['port']}"
    assert extender()["urlPrefix"] == f"https://{host}/extender"
    assert extender()["tlsConfig"]["serverName"] == f"{service['name']}.{service['namespace']}.svc"


def test_the_extender_is_called_over_https_trusting_the_kgm_certs_ca() -> None:
    ext = extender()
    assert ext["enableHTTPS"] is True
    # Verify the server (never `insecure`) and present the scheduler's own client certificate.
    assert set(ext["tlsConfig"]) == {"caFile", "certFile", "keyFile", "serverName"}
    source = mounted_file(ext["tlsConfig"]["caFile"])
    secret = source["volume"]["secret"]
    assert secret["secretName"] == CA_SECRET
    # Only the CA certificate is projected: the scheduler never sees the serving key.
    assert secret["items"] == [{"key": "ca.crt", "path": source["relative"]}]


def test_the_extender_is_called_with_the_client_certificate_of_its_own_secret() -> None:
    ext = extender()
    cert, key = mounted_file(ext["tlsConfig"]["certFile"]), mounted_file(ext["tlsConfig"]["keyFile"])
    assert cert["volume"] == key["volume"]
    secret = cert["volume"]["secret"]
    assert secret["secretName"] == CLIENT_SECRET
    assert {(i["key"], i["path"]) for i in secret["items"]} == {
        ("tls.crt", cert["relative"]),
        ("tls.key", key["relative"]),
    }
    # The key is readable by the scheduler's group only.
    assert secret["defaultMode"] == 0o440
    assert pod_spec()["securityContext"]["fsGroup"] == pod_spec()["securityContext"]["runAsGroup"]


def test_the_extender_is_a_weighted_node_cache_capable_non_ignorable_binder() -> None:
    ext = extender()
    assert isinstance(ext["weight"], int)
    assert 1 <= ext["weight"] <= 10
    assert ext["nodeCacheCapable"] is True
    assert ext["ignorable"] is False
    assert GO_DURATION.match(ext["httpTimeout"]), ext["httpTimeout"]
    assert ext["httpTimeout"] in ("1s", "2s", "3s", "4s", "5s")  # short: filter blocks the scheduling cycle


def test_managed_resources_are_whole_gpus_and_every_mixed_strategy_mig_resource() -> None:
    names = [resource["name"] for resource in extender()["managedResources"]]
    assert len(names) == len(set(names)), "duplicate managedResources"
    expected = {"nvidia.com/gpu"} | mixed_strategy_mig_resources()
    assert not expected - set(names), f"missing from managedResources: {sorted(expected - set(names))}"
    assert not set(names) - expected, f"not in the MIG catalogue: {sorted(set(names) - expected)}"


def test_kube_scheduler_still_checks_allocatable_for_every_managed_resource() -> None:
    for resource in extender()["managedResources"]:
        assert resource["ignoredByScheduler"] is False, resource["name"]


def test_leader_election_uses_a_lease_of_its_own_in_kgm_system() -> None:
    election = scheduler_config()["leaderElection"]
    assert election["leaderElect"] is True
    assert election.get("resourceLock", "leases") == "leases"
    assert (election["resourceNamespace"], election["resourceName"]) == (NAMESPACE, "kgm-scheduler")


# ------------------------------------------------------------------------------------------- RBAC


def bound_roles(kind: str) -> set[tuple[str, str, str]]:
    """(binding namespace or "", role kind, role name) of every binding of `kind` to our ServiceAccount."""
    found = set()
    for binding in objects(kind):
        if {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE} in binding["subjects"]:
            ref = binding["roleRef"]
            found.add((binding["metadata"].get("namespace", ""), ref["kind"], ref["name"]))
    return found


def test_the_service_account_is_bound_to_the_built_in_scheduler_roles() -> None:
    assert the("ServiceAccount", SERVICE_ACCOUNT)["metadata"]["namespace"] == NAMESPACE
    assert bound_roles("ClusterRoleBinding") == {
        ("", "ClusterRole", "system:kube-scheduler"),
        ("", "ClusterRole", "system:volume-scheduler"),
    }
    assert ("kube-system", "Role", "extension-apiserver-authentication-reader") in bound_roles("RoleBinding")


def test_the_leader_lease_is_granted_by_name_and_only_in_kgm_system() -> None:
    election = scheduler_config()["leaderElection"]
    granted = [
        (role["metadata"]["namespace"], rule)
        for role in objects("Role")
        if (NAMESPACE, "Role", role["metadata"]["name"]) in bound_roles("RoleBinding")
        for rule in role["rules"]
    ]
    named = [
        rule
        for namespace, rule in granted
        if namespace == election["resourceNamespace"]
        and rule["apiGroups"] == ["coordination.k8s.io"]
        and rule["resources"] == ["leases"]
        and rule.get("resourceNames") == [election["resourceName"]]
    ]
    assert named, "no rule grants the leader lease by name"
    assert {"get", "update"} <= {verb for rule in named for verb in rule["verbs"]}
    for _, rule in granted:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert rule["resources"] == ["leases"], f"more than leases granted: {rule}"
    assert not objects("ClusterRole"), "the built-in ClusterRoles cover everything cluster-wide"


# ------------------------------------------------------------------------------------- Deployment


def test_two_replicas_spread_over_nodes() -> None:
    assert deployment()["spec"]["replicas"] == 2
    anti = pod_spec()["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    selector = deployment()["spec"]["selector"]["matchLabels"]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"] == selector
        for t in terms
    )
    (pdb,) = objects("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_the_official_kube_scheduler_image_of_a_pinned_1_34_patch_runs_with_the_config() -> None:
    assert re.fullmatch(r"registry\.k8s\.io/kube-scheduler:v1\.34\.\d+", container()["image"])
    assert container()["command"][0] == "kube-scheduler"
    assert config_path().endswith(".yaml")


def test_it_is_scheduled_by_the_default_scheduler_not_by_itself() -> None:
    assert pod_spec().get("schedulerName", "default-scheduler") == "default-scheduler"
    assert pod_spec()["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod_spec()["priorityClassName"] == "system-cluster-critical"


def test_it_runs_unprivileged() -> None:
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert not pod_spec().get("hostNetwork", False)


def test_it_has_requests_and_limits() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")])
def test_probes_ask_the_secure_port_over_https(probe: str, path: str) -> None:
    get = container()[probe]["httpGet"]
    assert (get["path"], get["port"], get["scheme"]) == (path, 10259, "HTTPS")
