"""The one reservation parser, read both ways: as a REST body and as a GpuAllocation's spec."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from inventory.reservations.request import (
    MAX_COST_LIMIT,
    MAX_MEMORY_GB,
    SPEC,
    RequestError,
    body_request,
    parse_request,
)
from inventory.reservations.service import ReservationRequest

NAMES = {"namespace": "ml", "podName": "train"}


def from_body(fields: dict[str, Any]) -> ReservationRequest:
    return body_request({**NAMES, **fields})


def from_spec(fields: dict[str, Any]) -> ReservationRequest:
    return parse_request({"podName": "train", **fields}, SPEC, namespace="ml", pod_name="object-name")


def refusal(parse: Any, fields: dict[str, Any]) -> str:
    with pytest.raises(RequestError) as caught:
        parse(fields)
    return str(caught.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, ReservationRequest(namespace="ml", pod_name="train"), id="defaults"),
        pytest.param(
            {
                "workloadType": "inference",
                "requiredMemoryGb": 10.5,
                "useMig": True,
                "userId": "Alice_1",
                "teamId": "ml.platform",
                "maxDurationHours": 168,
                "costLimit": 12,
            },
            ReservationRequest(
                namespace="ml",
                pod_name="train",
                workload_type="Inference",
                required_memory_gb=Decimal("10.5"),
                use_mig=True,
                user_id="Alice_1",
                team_id="ml.platform",
                max_duration_hours=168,
                cost_limit=Decimal(12),
            ),
            id="every field, any case",
        ),
        pytest.param(
            {"useMig": None, "maxDurationHours": 1, "podName": "a.b-c"},
            ReservationRequest(namespace="ml", pod_name="a.b-c", max_duration_hours=1),
            id="null is unset, the bounds, a dotted pod name",
        ),
    ],
)
def test_both_ways_read_the_same_request(fields: dict[str, Any], expected: ReservationRequest) -> None:
    assert from_body(fields) == from_spec(fields) == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"workloadType": "Batch"}, "workloadType"),
        ({"workloadType": 3}, "workloadType"),
        ({"requiredMemoryGb": 0}, "requiredMemoryGb"),
        ({"requiredMemoryGb": -1}, "requiredMemoryGb"),
        ({"requiredMemoryGb": "10"}, "requiredMemoryGb"),
        ({"requiredMemoryGb": True}, "requiredMemoryGb"),
        ({"requiredMemoryGb": float("nan")}, "requiredMemoryGb"),
        ({"useMig": "yes"}, "useMig"),
        ({"maxDurationHours": 0}, "maxDurationHours"),
        ({"maxDurationHours": 169}, "maxDurationHours"),
        ({"maxDurationHours": 1.5}, "maxDurationHours"),
        ({"maxDurationHours": True}, "maxDurationHours"),
        ({"maxDurationHours": "24"}, "maxDurationHours"),
        ({"costLimit": -0.01}, "costLimit"),
        ({"costLimit": 1e26}, "costLimit"),
        ({"costLimit": 10**5000}, "costLimit"),
        ({"costLimit": MAX_COST_LIMIT + Decimal("0.01")}, "costLimit"),
        ({"requiredMemoryGb": 1e26}, "requiredMemoryGb"),
        ({"requiredMemoryGb": MAX_MEMORY_GB + 1}, "requiredMemoryGb"),
        ({"requiredMemoryGb": 1.7976931348623157e308}, "requiredMemoryGb"),
        ({"costLimit": "5"}, "costLimit"),
        ({"podName": "Train_1"}, "podName"),
        ({"podName": "a" * 254}, "podName"),
        ({"podName": 5}, "podName"),
        ({"teamId": "-ml"}, "teamId"),
        ({"teamId": "t" * 64}, "teamId"),
        ({"userId": 7}, "userId"),
    ],
)
def test_both_ways_refuse_the_same_field(fields: dict[str, Any], field: str) -> None:
    assert refusal(from_body, fields).startswith(f"{field} ")
    assert refusal(from_spec, fields).startswith(f"spec.{field} ")


@pytest.mark.parametrize(
    ("fields", "in_a_spec"),
    [
        pytest.param(
            {"costLimit": 0}, ReservationRequest("ml", "train", cost_limit=Decimal(0)), id="zero cost"
        ),
        pytest.param(
            {"maxDurationHours": 24.0}, ReservationRequest("ml", "train", max_duration_hours=24), id="24.0"
        ),
        pytest.param({"userId": ""}, ReservationRequest("ml", "train"), id="empty label value"),
        pytest.param({"podName": ""}, ReservationRequest("ml", "object-name"), id="empty pod name"),
    ],
)
def test_what_only_the_crd_schema_allows(fields: dict[str, Any], in_a_spec: ReservationRequest) -> None:
    assert from_spec(fields) == in_a_spec
    field = next(iter(fields))
    assert refusal(from_body, fields).startswith(f"{field} ")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1], "the body must be a JSON object"),
        ({"podName": "p"}, "namespace is required and must be a non-empty string"),
        ({"namespace": "a" * 64, "podName": "p"}, "namespace 'aaaa"),
        ({"namespace": "ml"}, "podName is required and must be a non-empty string"),
    ],
)
def test_a_body_names_its_namespace_and_pod(body: object, says: str) -> None:
    with pytest.raises(RequestError, match=f"^{says}"):
        body_request(body)


def test_a_spec_without_a_pod_name_reserves_for_the_object_name() -> None:
    assert parse_request({}, SPEC, namespace="ml", pod_name="object-name").pod_name == "object-name"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        pytest.param({"requiredMemoryGB": 40}, "requiredMemoryGB (requiredMemoryGb?)", id="mis-cased"),
        pytest.param({"costlimit": 5}, "costlimit (costLimit?)", id="lower case"),
        pytest.param({"unknownField": 1, "gpus": 2}, "gpus, unknownField", id="two unknown, sorted"),
    ],
)
def test_both_ways_refuse_unknown_fields_by_name(fields: dict[str, Any], says: str) -> None:
    assert refusal(from_body, fields) == f"unknown fields: {says}"
    spec_says = ", ".join(f"spec.{name}" for name in says.split(", "))
    assert refusal(from_spec, fields) == f"unknown fields: {spec_says}"


def test_the_bounds_themselves_are_accepted() -> None:
    fields = {"requiredMemoryGb": MAX_MEMORY_GB, "costLimit": MAX_COST_LIMIT}
    assert from_body(fields) == from_spec(fields)
    assert from_body(fields).cost_limit == MAX_COST_LIMIT
