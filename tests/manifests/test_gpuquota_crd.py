"""The GpuQuota CRD: a valid CustomResourceDefinition (the Kubernetes schema), a structural schema, printer
columns that point at fields the schema has, and samples (what users and the leader write) that fit it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from inventory.domain.quota import Unit, parse_gpuquota
from tests.manifests.test_crd_samples import schema_of
from tests.support.data import REPO
from tests.support.k8s_openapi import default_schemas

CRD = REPO / "manifests" / "crds" / "gpuquota.yaml"

QUOTA: dict[str, Any] = {
    "apiVersion": "gpu.kgm.io/v1alpha1",
    "kind": "GpuQuota",
    "metadata": {"name": "nlp", "namespace": "kgm-system"},
    "spec": {
        "team": "nlp",
        "limits": {
            "gpuEquivalents": 8,
            "memoryGB": 320,
            "costPerHour": 20.5,
            "costPerDay": 400,
            "costPerMonth": 9000,
        },
    },
    "status": {
        "used": {
            "gpuEquivalents": 7.43,
            "memoryGB": 300,
            "costPerHour": 18.2,
            "costPerDay": 436.8,
            "costPerMonth": 13286,
        },
        "pods": 12,
        "observedGeneration": 3,
        "updatedAt": "2026-12-06T05:00:00Z",
        "message": "",
    },
}


def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return document


def test_the_crd_is_a_valid_customresourcedefinition() -> None:
    default_schemas().validate(
        crd(), "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
    )


def test_the_crd_declares_a_namespaced_gpuquota_with_a_status_subresource() -> None:
    spec = crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["plural"]) == (
        "gpu.kgm.io",
        "Namespaced",
        "GpuQuota",
        "gpuquotas",
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"], version["subresources"]) == (
        "v1alpha1",
        True,
        True,
        {"status": {}},
    )


def _structural_problems(schema: dict[str, Any], path: str) -> list[str]:
    """What the API server's structural-schema check refuses: a node without a type, properties beside
    additionalProperties, x-kubernetes-preserve-unknown-fields nowhere (we use none)."""
    problems = []
    if "type" not in schema:
        problems.append(f"{path}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties")
    if "x-kubernetes-preserve-unknown-fields" in schema:
        problems.append(f"{path}: preserves unknown fields")
    for name, child in (schema.get("properties") or {}).items():
        problems += _structural_problems(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += _structural_problems(schema["items"], f"{path}[]")
    return problems


def test_the_schema_is_structural() -> None:
    (version,) = crd()["spec"]["versions"]
    assert _structural_problems(version["schema"]["openAPIV3Schema"], "") == []


def test_every_printer_column_reads_a_field_of_the_schema() -> None:
    (version,) = crd()["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        node = root
        for part in column["jsonPath"].lstrip(".").split("."):
            if part == "creationTimestamp":
                break
            node = node["properties"][part]
        else:
            assert node["type"] == column["type"], column["name"]


def test_the_limits_are_the_units_the_code_reads() -> None:
    (version,) = crd()["spec"]["versions"]
    limits = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["limits"]
    assert set(limits["properties"]) == {unit.value for unit in Unit}


def test_a_full_gpuquota_validates_and_reads() -> None:
    errors = list(Draft202012Validator(schema_of("gpuquota.yaml")).iter_errors(QUOTA))
    assert [e.message for e in errors] == []
    assert parse_gpuquota(QUOTA).team == "nlp"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "limits"), {"gpuEquivalents": -1}),
        (("spec", "limits"), {"gpus": 8}),  # a misspelt limit would vanish (pruned)
        (("spec", "team"), "not a label"),
        (("spec", "teams"), "nlp"),
    ],
)
def test_a_gpuquota_with_a_bad_field_is_refused(path: tuple[str, str], value: Any) -> None:
    sample = {**QUOTA, path[0]: {**QUOTA[path[0]], path[1]: value}}
    assert list(Draft202012Validator(schema_of("gpuquota.yaml")).iter_errors(sample))


def test_the_examples_validate_and_read() -> None:
    documents = list(yaml.safe_load_all((REPO / "examples" / "gpuquota.yaml").read_text()))
    assert len(documents) == 2
    for document in documents:
        errors = list(Draft202012Validator(schema_of("gpuquota.yaml")).iter_errors(document))
        assert [e.message for e in errors] == []
        assert parse_gpuquota(document).limits.items()
