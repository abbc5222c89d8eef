"""What a GpuAllocation may say: ``request_of`` parsing its spec (defaults, and the bad field named),
and the CRD manifest agreeing with the code's enums, bounds and columns."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
import yaml

from inventory.domain.allocation import MAX_DURATION_HOURS
from inventory.domain.pods import WorkloadType
from inventory.kube import GPUALLOCATIONS, GROUP, VERSION
from inventory.reservations.controller import Phase, request_of
from inventory.reservations.request import MAX_COST_LIMIT, MAX_MEMORY_GB
from inventory.reservations.service import ReservationRequest
from tests.inventory.reservations.controller_support import ga
from tests.support.data import REPO


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            ga(),
            ReservationRequest(namespace="ml", pod_name="train", workload_type="Development"),
            id="defaults: the pod is the object's name, Development",
        ),
        pytest.param(
            {"metadata": {"name": "train", "namespace": "ml"}},
            ReservationRequest(namespace="ml", pod_name="train"),
            id="no spec at all",
        ),
        pytest.param(
            ga(
                workloadType="Inference",
                requiredMemoryGb=10,
                useMig=True,
                maxDurationHours=48,
                costLimit=12.5,
                podName="serve-0",
                teamId="ml-research",
                userId="alice",
            ),
            ReservationRequest(
                namespace="ml",
                pod_name="serve-0",
                workload_type="Inference",
                required_memory_gb=Decimal(10),
                use_mig=True,
                user_id="alice",
                team_id="ml-research",
                max_duration_hours=48,
                cost_limit=Decimal("12.5"),
            ),
            id="every field",
        ),
        pytest.param(
            ga(workloadType="training", requiredMemoryGb=0.5, useMig=False),
            ReservationRequest(
                namespace="ml",
                pod_name="train",
                workload_type="Training",
                required_memory_gb=Decimal("0.5"),
                use_mig=False,
            ),
            id="workload type in any case, a fraction of a GB",
        ),
        pytest.param(
            ga(maxDurationHours=24.0, costLimit=0, teamId="", userId=None),
            ReservationRequest(
                namespace="ml", pod_name="train", max_duration_hours=24, cost_limit=Decimal(0)
            ),
            id="24.0 hours is whole, a zero cost limit, empty ids are none",
        ),
        pytest.param(
            ga(maxDurationHours=1, podName="a.b-c"),
            ReservationRequest(namespace="ml", pod_name="a.b-c", max_duration_hours=1),
            id="bounds: one hour, a dotted pod name",
        ),
        pytest.param(
            ga(maxDurationHours=MAX_DURATION_HOURS),
            ReservationRequest(namespace="ml", pod_name="train", max_duration_hours=168),
            id="bounds: a week",
        ),
    ],
)
def test_request_of_parses_the_spec_and_applies_the_defaults(
    obj: dict[str, Any], expected: ReservationRequest
) -> None:
    assert request_of(obj) == expected


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (ga(workloadType="Batch"), "spec.workloadType must be one of Training, Inference, Development"),
        (ga(workloadType=3), "spec.workloadType"),
        (ga(requiredMemoryGb=0), "spec.requiredMemoryGb must be a number greater than 0"),
        (ga(requiredMemoryGb=-1), "spec.requiredMemoryGb must be a number greater than 0"),
        (ga(requiredMemoryGb="10"), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=True), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=float("nan")), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=float("inf")), "spec.requiredMemoryGb must be a number"),
        (ga(useMig="yes"), "spec.useMig must be true or false"),
        (ga(maxDurationHours=0), "spec.maxDurationHours must be a whole number 1..168"),
        (ga(maxDurationHours=169), "spec.maxDurationHours must be a whole number 1..168"),
        (ga(maxDurationHours=1.5), "spec.maxDurationHours must be a whole number"),
        (ga(maxDurationHours=True), "spec.maxDurationHours must be a whole number"),
        (ga(maxDurationHours="24"), "spec.maxDurationHours must be a whole number"),
        (ga(costLimit=-0.01), "spec.costLimit must be a number at least 0"),
        (ga(costLimit="5"), "spec.costLimit must be a number at least 0"),
        (ga(podName="Train_1"), "spec.podName 'Train_1' is not a valid DNS subdomain name"),
        (ga(podName="a" * 254), "spec.podName"),
        (ga(podName=5), "spec.podName must be a string"),
        (ga(teamId="-ml"), "spec.teamId '-ml' is not a valid label value"),
        (ga(teamId="t" * 64), "spec.teamId"),
        (ga(userId=7), "spec.userId must be a string"),
        ({**ga(), "spec": "all of it"}, "spec must be an object"),
        ({"metadata": {"name": "train"}}, "metadata.namespace is missing"),
        ({"metadata": {"namespace": "ml"}}, "metadata.name is missing"),
        ({}, "metadata.namespace is missing"),
    ],
)
def test_request_of_names_the_bad_field(obj: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(says)}"):
        request_of(obj)


CRD = REPO / "manifests" / "crds" / "gpuallocation.yaml"


def crd_version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["plural"] == GPUALLOCATIONS
    assert crd["metadata"]["name"] == f"{GPUALLOCATIONS}.{GROUP}"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == VERSION
    return dict(version)


def test_the_crd_enums_and_bounds_are_the_codes() -> None:
    schema = crd_version()["schema"]["openAPIV3Schema"]["properties"]
    spec, status = schema["spec"]["properties"], schema["status"]["properties"]
    assert spec["workloadType"]["enum"] == [w.value for w in WorkloadType]
    assert spec["workloadType"]["default"] == WorkloadType.DEVELOPMENT.value
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert (spec["maxDurationHours"]["minimum"], spec["maxDurationHours"]["maximum"]) == (
        1,
        MAX_DURATION_HOURS,
    )
    # The parser's bounds are the schema's: what the API server admits, the controller accepts.
    assert (spec["requiredMemoryGb"]["minimum"], spec["requiredMemoryGb"]["maximum"]) == (0, MAX_MEMORY_GB)
    assert spec["requiredMemoryGb"]["exclusiveMinimum"] is True
    assert (spec["costLimit"]["minimum"], Decimal(str(spec["costLimit"]["maximum"]))) == (0, MAX_COST_LIMIT)


def test_the_crd_schema_is_structural_and_has_the_columns() -> None:
    version = crd_version()

    def untyped(schema: dict[str, Any], path: str) -> list[str]:
        missing = [] if "type" in schema else [path]
        for name, sub in schema.get("properties", {}).items():
            missing += untyped(sub, f"{path}.{name}")
        return missing

    assert untyped(version["schema"]["openAPIV3Schema"], "") == []
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Resource", "Node", "Age"]
