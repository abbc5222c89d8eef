"""Every Kubernetes object under manifests/ validates strictly against the Kubernetes 1.35 OpenAPI
schemas. Kustomize's own files, kustomize patches and the objects of other projects' CRDs
(Prometheus operator, cert-manager) are not Kubernetes objects of that API: tests/manifests/
renders the kustomizations and checks what they produce."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.data import REPO
from tests.support.k8s_openapi import default_schemas

MANIFESTS_DIR = REPO / "manifests"
MANIFESTS = sorted(MANIFESTS_DIR.rglob("*.yaml"))


#: API groups whose schemas are not in the Kubernetes OpenAPI documents.
FOREIGN_GROUPS = ("kustomize.config.k8s.io", "monitoring.coreos.com", "cert-manager.io")


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        if path.name == "kustomization.yaml" or "patches" in path.parts:
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and not str(doc.get("apiVersion", "")).startswith(FOREIGN_GROUPS):
                found.append((f"{path.relative_to(MANIFESTS_DIR)}#{i}", doc))
    return found


@pytest.mark.parametrize(("name", "manifest"), documents(), ids=[n for n, _ in documents()])
def test_the_manifest_is_a_valid_kubernetes_object(name: str, manifest: dict[str, Any]) -> None:
    if manifest.get("apiVersion") == "batch/v1" and manifest.get("kind") == "Job":
        # The shared OpenAPI documents have no batch/v1: check the Job's shape and its pod template.
        assert set(manifest) <= {"apiVersion", "kind", "metadata", "spec"}
        default_schemas().validate(manifest["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        default_schemas().validate(manifest["spec"]["template"], "io.k8s.api.core.v1.PodTemplateSpec")
        return
    if manifest.get("apiVersion") == "batch/v1" and manifest.get("kind") == "CronJob":
        # Likewise: its pod template here; its spec's fields in tests/manifests/test_ledger_backup.py.
        default_schemas().validate(manifest["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        template = manifest["spec"]["jobTemplate"]["spec"]["template"]
        default_schemas().validate(template, "io.k8s.api.core.v1.PodTemplateSpec")
        return
    default_schemas().validate_resource(manifest)


def test_the_webhook_is_registered_for_pod_creates_with_v1_reviews() -> None:
    (hook,) = next(doc for _, doc in documents() if doc["kind"] == "MutatingWebhookConfiguration")["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]  # UPDATE: claims, see test_webhook.py
