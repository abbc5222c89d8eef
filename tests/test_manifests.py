"""Every manifest validates strictly against the Kubernetes 1.35 OpenAPI schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s_openapi import default_schemas

MANIFESTS = sorted((Path(__file__).resolve().parents[1] / "manifests").rglob("*.yaml"))


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                found.append((f"{path.name}#{i}", doc))
    return found


@pytest.mark.parametrize(("name", "manifest"), documents(), ids=[n for n, _ in documents()])
def test_the_manifest_is_a_valid_kubernetes_object(name: str, manifest: dict[str, Any]) -> None:
    default_schemas().validate_resource(manifest)


def test_the_webhook_is_registered_for_pod_creates_with_v1_reviews() -> None:
    (hook,) = next(doc for _, doc in documents() if doc["kind"] == "MutatingWebhookConfiguration")["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert hook["rules"][0]["operations"] == ["CREATE"]
