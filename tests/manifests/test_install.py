"""What each kustomization renders: the install is the base and the certificate Job, the cert-manager
overlay the base and cert-manager's certificates, monitoring only the monitoring objects; everything
lives in kgm-system (or says why not), the CRDs are the repository's files and the images the release."""

from __future__ import annotations

import pytest
import yaml

from tests.manifests.rendering import (
    CERT_MANAGER,
    IMAGE,
    INSTALL,
    MANIFESTS,
    MONITORING,
    NAMESPACE,
    VARIANTS,
    WEBHOOK,
    WORKLOAD_KINDS,
    containers,
    find,
    key,
    pod_spec,
    render,
)

# ------------------------------------------------------------------------------- what gets rendered

CONTROLLER_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm"),
    ("ClusterRole", "", "kgm-controller"),
    ("ClusterRoleBinding", "", "kgm-controller"),
    *{("ClusterRole", "", f"kgm-{r}") for r in ("admin", "operator", "user", "viewer", "finance")},
    ("ClusterRole", "", "kgm-overview"),
    ("ClusterRole", "", "kgm-access-reviews"),
    ("ClusterRoleBinding", "", "kgm-access-reviews"),
    ("Role", NAMESPACE, "kgm-leader-election"),
    ("RoleBinding", NAMESPACE, "kgm-leader-election"),
    ("Deployment", NAMESPACE, "kgm"),
    ("PodDisruptionBudget", NAMESPACE, "kgm"),
    ("Service", NAMESPACE, "kgm"),
    ("Service", NAMESPACE, "kgm-leader"),
    ("NetworkPolicy", NAMESPACE, "kgm"),
}
AGENT_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-agent"),
    ("ClusterRole", "", "kgm-agent"),
    ("ClusterRoleBinding", "", "kgm-agent"),
    ("DaemonSet", NAMESPACE, "kgm-agent"),
    ("NetworkPolicy", NAMESPACE, "kgm-agent"),
}
SCHEDULER_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-scheduler"),
    ("ClusterRoleBinding", "", "kgm-scheduler-as-kube-scheduler"),
    ("ClusterRoleBinding", "", "kgm-scheduler-as-volume-scheduler"),
    ("RoleBinding", "kube-system", "kgm-scheduler-extension-apiserver-authentication-reader"),
    ("Role", NAMESPACE, "kgm-scheduler-leader-election"),
    ("RoleBinding", NAMESPACE, "kgm-scheduler-leader-election"),
    ("ConfigMap", NAMESPACE, "kgm-scheduler-config"),
    ("Deployment", NAMESPACE, "kgm-scheduler"),
    ("PodDisruptionBudget", NAMESPACE, "kgm-scheduler"),
}
CERTS_JOB_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-certs"),
    ("Role", NAMESPACE, "kgm-certs"),
    ("RoleBinding", NAMESPACE, "kgm-certs"),
    ("ClusterRole", "", "kgm-certs"),
    ("ClusterRoleBinding", "", "kgm-certs"),
    ("Job", NAMESPACE, "kgm-certs"),
    ("NetworkPolicy", NAMESPACE, "kgm-certs"),
}
CERT_MANAGER_OBJECTS = {
    ("Issuer", NAMESPACE, "kgm-selfsigned"),
    ("Certificate", NAMESPACE, "kgm-ca"),
    ("Issuer", NAMESPACE, "kgm-ca"),
    ("Certificate", NAMESPACE, "kgm-serving"),
    ("Certificate", NAMESPACE, "kgm-scheduler-client"),
}
BASE_OBJECTS = {
    ("Namespace", "", NAMESPACE),
    ("ResourceQuota", NAMESPACE, "kgm-critical-pods"),
    ("CustomResourceDefinition", "", "gpunodes.gpu.kgm.io"),
    ("CustomResourceDefinition", "", "gpuallocations.gpu.kgm.io"),
    ("CustomResourceDefinition", "", "gpuquotas.gpu.kgm.io"),
    ("MutatingWebhookConfiguration", "", WEBHOOK),
    *CONTROLLER_OBJECTS,
    *AGENT_OBJECTS,
    *SCHEDULER_OBJECTS,
}
MONITORING_OBJECTS = {
    ("ServiceMonitor", NAMESPACE, "kgm"),
    ("PrometheusRule", NAMESPACE, "kgm"),
    ("ConfigMap", NAMESPACE, "kgm-grafana-dashboard"),
}


def test_the_install_is_the_base_and_the_certificate_job() -> None:
    assert {key(o) for o in render(INSTALL)} == BASE_OBJECTS | CERTS_JOB_OBJECTS


def test_the_cert_manager_overlay_is_the_base_and_certificates_without_any_job_object() -> None:
    objs = render(CERT_MANAGER)
    assert {key(o) for o in objs} == BASE_OBJECTS | CERT_MANAGER_OBJECTS
    assert not [
        o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "certs"
    ]


def test_the_overlay_changes_nothing_of_the_base_but_the_webhook_annotation() -> None:
    install = {key(o): o for o in render(INSTALL)}
    overlay = {key(o): o for o in render(CERT_MANAGER)}
    for k in BASE_OBJECTS:
        mine, theirs = install[k], overlay[k]
        if k[0] == "MutatingWebhookConfiguration":
            theirs["metadata"].pop("annotations")
        assert mine == theirs, k


def test_monitoring_is_applied_on_top_and_holds_only_the_monitoring_objects() -> None:
    assert {key(o) for o in render(MONITORING)} == MONITORING_OBJECTS


def test_every_kustomization_in_the_tree_renders() -> None:
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        kustomization = yaml.safe_load(path.read_text())
        objs = render(path.parent)
        # A component that only transforms (an image's tag) renders, to nothing, on its own.
        assert objs or (kustomization["kind"] == "Component" and not kustomization.get("resources")), path


# ---------------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("variant", ["install", "cert-manager"])
def test_everything_lives_in_kgm_system_but_the_scheduler_authentication_reader(variant: str) -> None:
    for obj in render(VARIANTS[variant]):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in ("Namespace", "CustomResourceDefinition", "MutatingWebhookConfiguration") or obj[
            "kind"
        ].startswith("Cluster"):
            assert namespace is None, key(obj)
        elif obj["metadata"]["name"] == "kgm-scheduler-extension-apiserver-authentication-reader":
            assert namespace == "kube-system"
        else:
            assert namespace == NAMESPACE, key(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "k8s-gpu-management", key(obj)


def test_the_namespace_never_opts_into_its_own_webhook() -> None:
    namespace = find(render(INSTALL), "Namespace", NAMESPACE)
    assert "gpu.kgm.io/managed" not in namespace["metadata"]["labels"]
    (hook,) = find(render(INSTALL), "MutatingWebhookConfiguration", WEBHOOK)["webhooks"]
    excluded = [
        e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE, "kube-system"]}
    ]


def test_the_critical_priority_classes_are_covered_by_a_quota_in_kgm_system() -> None:
    objs = render(INSTALL)
    used = {
        pod_spec(o)["priorityClassName"]
        for o in objs
        if o["kind"] in WORKLOAD_KINDS and "priorityClassName" in pod_spec(o)
    }
    assert used == {"system-cluster-critical", "system-node-critical"}
    quota = find(objs, "ResourceQuota", "kgm-critical-pods")
    (scope,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert (scope["scopeName"], scope["operator"], set(scope["values"])) == ("PriorityClass", "In", used)


def test_the_crds_are_the_repository_files_unchanged() -> None:
    for name in ("gpunode", "gpuallocation", "gpuquota"):
        source = yaml.safe_load((MANIFESTS / "crds" / f"{name}.yaml").read_text())
        rendered = find(render(INSTALL), "CustomResourceDefinition", source["metadata"]["name"])
        del rendered["metadata"]["labels"]["app.kubernetes.io/part-of"]
        assert rendered == source


def test_every_image_is_the_pinned_release() -> None:
    for variant in ("install", "cert-manager"):
        for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
            for c in containers(workload):
                if workload["metadata"]["name"] != "kgm-scheduler":
                    assert c["image"] == IMAGE, (key(workload), c["name"])
