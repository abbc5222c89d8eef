"""Tests for the strict Kubernetes OpenAPI validator used by the rest of the suite."""

from __future__ import annotations

import base64
import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from jsonschema import Draft202012Validator

from tests.support.data import K8S_FIXTURES

from .k8s_openapi import (
    K8sSchemas,
    K8sValidationError,
    default_schemas,
    drop_nulls,
    format_path,
)

POD = "io.k8s.api.core.v1.Pod"
NODE = "io.k8s.api.core.v1.Node"
FIXTURES = K8S_FIXTURES


@functools.cache
def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def fixture(name: str) -> Any:
    """A fresh (deep) copy of a wire-format fixture, safe to mutate."""
    return copy.deepcopy(_load(name))


def create_pod() -> dict[str, Any]:
    pod: dict[str, Any] = fixture("admissionreview-pod-create.json")["request"]["object"]
    return pod


def _fixture_objects() -> list[Any]:
    """Every Pod and Node carried by the wire-format fixtures, as (file, where, schema) params."""
    params = []
    for path in sorted(FIXTURES.glob("*.json")):
        data = _load(path.name)
        if not isinstance(data, dict):
            continue  # e.g. the prioritize result: a bare list
        request = data.get("request")
        if path.name.startswith("admissionreview-") and request is not None:
            for key in ("object", "oldObject"):
                if request.get(key) is not None:
                    params.append(pytest.param(path.name, ("request", key), POD, id=f"{path.name}:{key}"))
        if path.name.startswith("extender-") and data.get("Pod") is not None:
            params.append(pytest.param(path.name, ("Pod",), POD, id=f"{path.name}:Pod"))
        if path.name.startswith("extender-") and data.get("Nodes") is not None:
            for index, node in enumerate(data["Nodes"]["items"]):
                name = node["metadata"]["name"]
                params.append(
                    pytest.param(path.name, ("Nodes", "items", index), NODE, id=f"{path.name}:{name}")
                )
    return params


FIXTURE_OBJECTS = _fixture_objects()


def _dig(data: Any, keys: tuple[str | int, ...]) -> Any:
    for key in keys:
        data = data[key]
    return data


@pytest.fixture(scope="module")
def schemas() -> K8sSchemas:
    return default_schemas()


def synthetic(tmp_path: Path, schemas: dict[str, Any]) -> K8sSchemas:
    """A K8sSchemas over a one-document spec holding `schemas`, for extension keywords upstream lacks."""
    document = tmp_path / "test_openapi.json"
    document.write_text(json.dumps({"openapi": "3.0.0", "components": {"schemas": schemas}}))
    return K8sSchemas.from_directory(tmp_path)


# ---------------------------------------------------------------------------- the wire-format fixtures


@pytest.mark.parametrize(("file", "keys", "schema_name"), FIXTURE_OBJECTS)
def test_every_pod_and_node_in_the_fixtures_validates_strictly(
    schemas: K8sSchemas, file: str, keys: tuple[str | int, ...], schema_name: str
) -> None:
    schemas.validate(_dig(fixture(file), keys), schema_name)


def test_fixture_discovery_finds_every_pod_and_node() -> None:
    ids = {param.id for param in FIXTURE_OBJECTS}
    assert {
        "admissionreview-pod-create.json:object",
        "admissionreview-pod-create-dryrun.json:object",
        "admissionreview-pod-update.json:object",
        "admissionreview-pod-update.json:oldObject",
        "extender-filter-args.json:Pod",
        "extender-filter-args-nodecache.json:Pod",
        "extender-prioritize-args.json:Pod",
        "extender-preemption-args-nodecache.json:Pod",
        "extender-filter-args.json:gpu-a100-01",
        "extender-filter-args.json:gpu-h100-01",
        "extender-filter-args.json:gpu-h100nvl-01",
    } <= ids
    assert not any(
        "response" in param_id or (":oldObject" in param_id and "create" in param_id) for param_id in ids
    )


def test_pod_after_the_example_webhook_patch_still_validates(schemas: K8sSchemas) -> None:
    response = fixture("admissionreview-response-allow-patch.json")["response"]
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(create_pod(), patch)
    schemas.validate(patched, POD)
    assert patched["metadata"]["annotations"] == {"gpu-manager.example.com/managed": "true"}


# ----------------------------------------------------------------------------------------- strictness


def test_unknown_container_field_is_an_error_named_by_its_path(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["spec"]["containers"][0]["resourcez"] = {"limits": {"nvidia.com/gpu": "1"}}
    assert schemas.errors(pod, POD) == [
        "$.spec.containers[0].resourcez: unknown field (not in io.k8s.api.core.v1.Container)"
    ]


def test_unknown_field_introduced_by_a_json_patch_is_caught(schemas: K8sSchemas) -> None:
    patch = [{"op": "add", "path": "/spec/nodeSelectr", "value": {"nvidia.com/gpu.present": "true"}}]
    patched = jsonpatch.apply_patch(create_pod(), patch)
    assert schemas.errors(patched, POD) == [
        "$.spec.nodeSelectr: unknown field (not in io.k8s.api.core.v1.PodSpec)"
    ]


def test_wrong_type_is_an_error(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["spec"]["containers"] = {"trainer": pod["spec"]["containers"][0]}
    [error] = schemas.errors(pod, POD)
    assert error.startswith("$.spec.containers: ") and "is not of type 'array'" in error


def test_missing_required_field_is_an_error(schemas: K8sSchemas) -> None:
    pod = create_pod()
    del pod["spec"]["containers"][0]["name"]
    assert schemas.errors(pod, POD) == ["$.spec.containers[0]: 'name' is a required property"]


def test_validate_raises_an_assertion_listing_every_error_sorted_by_path(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["zzz"] = 1
    pod["spec"]["containers"][0]["resourcez"] = {}
    pod["metadata"]["labelz"] = {}
    with pytest.raises(AssertionError) as raised:
        schemas.validate(pod, POD)
    assert isinstance(raised.value, K8sValidationError)
    assert raised.value.errors == [
        "$.metadata.labelz: unknown field (not in io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta)",
        "$.spec.containers[0].resourcez: unknown field (not in io.k8s.api.core.v1.Container)",
        "$.zzz: unknown field (not in io.k8s.api.core.v1.Pod)",
    ]
    assert "3 error(s)" in str(raised.value)
    assert "$.spec.containers[0].resourcez" in str(raised.value)


def test_maps_accept_any_key(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["metadata"]["labels"]["gpu-manager.example.com/anything"] = "yes"
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-3g.40gb"] = "1"
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    schemas.validate(pod, POD)


def test_map_values_are_still_typed(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["metadata"]["labels"] = {"nvidia.com/gpu.count": 8}
    assert schemas.errors(pod, POD) == [
        "$.metadata.labels['nvidia.com/gpu.count']: 8 is not of type 'string'"
    ]


def test_free_form_objects_stay_open(schemas: K8sSchemas) -> None:
    # managedFields[].fieldsV1 is FieldsV1: {"type": "object"} with no properties.
    pod = fixture("admissionreview-pod-update.json")["request"]["object"]
    pod["metadata"]["managedFields"][0]["fieldsV1"] = {"f:anything": {"f:at-all": {}}}
    schemas.validate(pod, POD)


# ------------------------------------------------------------------------------ kind, apiVersion, types


def test_kind_and_api_version_are_accepted_when_present_and_optional(schemas: K8sSchemas) -> None:
    pod = create_pod()
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    schemas.validate(pod, POD)
    del pod["apiVersion"], pod["kind"]
    schemas.validate(pod, POD)


def test_kind_and_api_version_must_match_the_schema(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["apiVersion"], pod["kind"] = "apps/v1", "Deployment"
    assert schemas.errors(pod, POD) == [
        "$.apiVersion: 'apps/v1' is not one of ['v1']",
        "$.kind: 'Deployment' is not one of ['Pod']",
    ]


@pytest.mark.parametrize("quantity", ["2", "500m", "64Gi", "1.5", "1e3", ".5", 2, 0.5])
def test_quantity_accepts_kubernetes_quantities(schemas: K8sSchemas, quantity: str | float) -> None:
    pod = create_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = quantity
    schemas.validate(pod, POD)


@pytest.mark.parametrize("quantity", ["two", "1 Gi", "1GB", "", True, None, [1]])
def test_quantity_rejects_what_the_api_server_cannot_parse(schemas: K8sSchemas, quantity: object) -> None:
    pod = create_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = quantity
    assert schemas.errors(pod, POD, drop_null_values=False) == [
        f"$.spec.containers[0].resources.limits['nvidia.com/gpu']: {quantity!r} is not a Kubernetes quantity "
        "(like 2, '500m', '64Gi')"
    ]


@pytest.mark.parametrize(("port", "valid"), [(8080, True), ("http", True), (1.5, False), (True, False)])
def test_int_or_string_accepts_an_integer_or_a_string(schemas: K8sSchemas, port: object, valid: bool) -> None:
    pod = create_pod()
    pod["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": port}}
    assert schemas.is_valid(pod, POD) is valid


def test_formats_that_can_be_checked_are_checked(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["metadata"]["creationTimestamp"] = "2025-13-01T00:00:00Z"  # month 13
    pod["spec"]["priority"] = 2**31  # int32
    pod["spec"]["securityContext"] = {"runAsUser": 2**63}  # int64
    assert schemas.errors(pod, POD) == [
        "$.metadata.creationTimestamp: '2025-13-01T00:00:00Z' is not a 'date-time'",
        "$.spec.priority: 2147483648 is not a 'int32'",
        "$.spec.securityContext.runAsUser: 9223372036854775808 is not a 'int64'",
    ]


def test_rfc3339_timestamps_with_offsets_and_fractions_are_accepted(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["metadata"]["creationTimestamp"] = "2025-06-12T09:14:03.123456+02:00"
    schemas.validate(pod, POD)


# --------------------------------------------------------------------------------------------- nulls


def test_drop_nulls_removes_null_keys_recursively_and_keeps_list_items() -> None:
    obj = {
        "a": None,
        "b": {"c": None, "d": 1, "e": {"f": None}},
        "g": [None, 1, {"h": None, "i": 2}, [None, {"j": None}]],
        "k": [],
    }
    original = copy.deepcopy(obj)
    assert drop_nulls(obj) == {"b": {"d": 1, "e": {}}, "g": [None, 1, {"i": 2}, [None, {}]], "k": []}
    assert obj == original  # the input is not modified
    assert drop_nulls(None) is None
    assert drop_nulls("x") == "x"


def test_null_timestamps_validate_because_validate_drops_nulls(schemas: K8sSchemas) -> None:
    pod = fixture("admissionreview-pod-update.json")["request"]["object"]
    assert pod["status"]["conditions"][0]["lastProbeTime"] is None
    schemas.validate(pod, POD)
    errors = schemas.errors(pod, POD, drop_null_values=False)
    assert errors and all(".lastProbeTime: None is not of type 'string'" in error for error in errors)


def test_null_list_items_are_still_errors(schemas: K8sSchemas) -> None:
    pod = create_pod()
    pod["spec"]["containers"][0]["args"].append(None)
    [error] = schemas.errors(pod, POD)
    assert error.startswith("$.spec.containers[0].args[3]: None is not of type 'string'")


# ------------------------------------------------------------------------ documents and the conversion


def test_documents_merge_without_conflicting_duplicates(schemas: K8sSchemas) -> None:
    assert len(schemas.documents) == 8
    assert schemas.duplicate_conflicts == []
    assert schemas.find_document_for(POD).name == "api__v1_openapi.json"
    assert schemas.find_document_for("io.k8s.api.apps.v1.Deployment").name == "apis__apps__v1_openapi.json"


def test_schema_names_can_be_looked_up_by_api_version_and_kind(schemas: K8sSchemas) -> None:
    assert schemas.schema_name_for("v1", "Pod") == POD
    assert schemas.schema_name_for("apps/v1", "DaemonSet") == "io.k8s.api.apps.v1.DaemonSet"
    assert (
        schemas.schema_name_for("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
        == "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration"
    )
    with pytest.raises(KeyError, match="AdmissionReview"):
        schemas.schema_name_for("admission.k8s.io/v1", "AdmissionReview")


def test_validate_resource_picks_the_schema_from_api_version_and_kind(schemas: K8sSchemas) -> None:
    assert schemas.validate_resource(create_pod()) == POD
    pod = create_pod()
    pod["spec"]["containerz"] = []
    with pytest.raises(K8sValidationError, match=r"\$\.spec\.containerz: unknown field"):
        schemas.validate_resource(pod)


def test_unknown_schema_names_are_reported_with_a_suggestion(schemas: K8sSchemas) -> None:
    with pytest.raises(KeyError, match=r"did you mean \['io\.k8s\.api\.core\.v1\.Pod'\]"):
        schemas.validate({}, "Pod")


def test_validators_are_built_once_per_schema_name(schemas: K8sSchemas) -> None:
    assert schemas.validator(POD) is schemas.validator(POD)
    assert default_schemas() is schemas


def test_converted_schemas_are_valid_draft_2020_12(schemas: K8sSchemas) -> None:
    Draft202012Validator.check_schema(schemas.json_schema(POD))


def test_preserve_unknown_fields_and_embedded_resources_stay_open(tmp_path: Path) -> None:
    local = synthetic(
        tmp_path,
        {
            "T": {
                "type": "object",
                "properties": {
                    "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
                    "open": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                    "embedded": {
                        "type": "object",
                        "properties": {"spec": {"type": "object"}},
                        "x-kubernetes-embedded-resource": True,
                    },
                },
            }
        },
    )
    local.validate(
        {"open": {"a": "x", "b": 1}, "embedded": {"apiVersion": "v1", "kind": "X", "spec": {}}}, "T"
    )
    assert local.errors({"strict": {"b": 1}, "embedded": {"status": {}}}, "T") == [
        "$.embedded.status: unknown field",
        "$.strict.b: unknown field",
    ]


def test_int_or_string_extension_nullable_and_refs_in_all_of(tmp_path: Path) -> None:
    local = synthetic(
        tmp_path,
        {
            "T": {
                "type": "object",
                "properties": {
                    "port": {"x-kubernetes-int-or-string": True},
                    "maybe": {"type": "string", "nullable": True},
                    "child": {"allOf": [{"$ref": "#/components/schemas/Child"}], "default": {}},
                    "nullable": {"type": "boolean"},  # a property *named* like a keyword is just a property
                },
            },
            "Child": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
        },
    )
    local.validate(
        {"port": 1, "maybe": None, "child": {"n": 1}, "nullable": True}, "T", drop_null_values=False
    )
    local.validate({"port": "http"}, "T")
    assert local.errors({"port": 1.5, "child": {"m": 1}}, "T") == [
        "$.child: 'n' is a required property",
        "$.child.m: unknown field (not in Child)",
        "$.port: 1.5 is not valid under any of the given schemas (1.5 is not of type 'integer'; "
        "1.5 is not of type 'string')",
    ]


def test_format_path_quotes_keys_that_are_not_identifiers() -> None:
    assert format_path([]) == "$"
    assert format_path(["spec", "containers", 0, "name"]) == "$.spec.containers[0].name"
    assert format_path(["metadata", "labels", "nvidia.com/gpu"]) == "$.metadata.labels['nvidia.com/gpu']"
