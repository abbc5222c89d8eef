"""Sample objects validate against our CRDs' own schemas (what the API server would accept)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.support.data import REPO

CRDS = REPO / "manifests" / "crds"


def schema_of(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    (version,) = crd["spec"]["versions"]
    return _closed(version["schema"]["openAPIV3Schema"])


def _closed(schema: Any) -> Any:
    """Unknown fields are errors (the API server prunes them silently: a typo would vanish)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items() if not key.startswith("x-kubernetes")}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


ALLOCATION: dict[str, Any] = {
    "apiVersion": "gpu.kgm.io/v1alpha1",
    "kind": "GpuAllocation",
    "metadata": {"name": "llm-serve", "namespace": "ml"},
    "spec": {
        "workloadType": "Inference",
        "requiredMemoryGb": 40,
        "useMig": True,
        "maxDurationHours": 8,
        "costLimit": 25.5,
        "podName": "llm-serve",
        "teamId": "nlp",
        "userId": "alice",
    },
    "status": {
        "phase": "Allocated",
        "allocatedResource": "nvidia.com/mig-3g.40gb",
        "nodeName": "gpu-h100-01",
        "allocationId": "0f7c7d4e-6f1e-4b0a-9d55-2f3f1f6a9a10",
        "costPerHour": 1.6714,
        "allocationTime": "2026-11-27T08:00:00Z",
        "message": "",
    },
}


def test_a_full_gpuallocation_validates() -> None:
    errors = list(Draft202012Validator(schema_of("gpuallocation.yaml")).iter_errors(ALLOCATION))
    assert [e.message for e in errors] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "maxDurationHours"), 500),
        (("spec", "workloadType"), "Batch"),
        (("status", "phase"), "Running"),
        (("spec", "requiredMemoryGB"), 40),  # a misspelt field
    ],
)
def test_a_gpuallocation_with_a_bad_field_is_refused(path: tuple[str, str], value: Any) -> None:
    sample = {**ALLOCATION, path[0]: {**ALLOCATION[path[0]], path[1]: value}}
    assert list(Draft202012Validator(schema_of("gpuallocation.yaml")).iter_errors(sample))
