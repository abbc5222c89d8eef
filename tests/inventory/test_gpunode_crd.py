"""The GpuNode CRD against what an agent writes: the resource with its status subresource, and a schema
that every field of an agent's status fits, so that the API server prunes nothing."""

from __future__ import annotations

from typing import Any

import yaml
from jsonschema import Draft202012Validator

from tests.support.data import REPO

CRD = REPO / "manifests" / "crds" / "gpunode.yaml"


def crd_status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused: what the API server would prune is an error here."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema:
            schema["additionalProperties"] = False
    return schema


def test_the_crd_declares_the_gpunode_resource_with_a_status_subresource() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "gpunodes.gpu.kgm.io"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["shortNames"]) == (
        "gpu.kgm.io",
        "Cluster",
        "GpuNode",
        ["gn"],
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"], version["subresources"]) == (
        "v1alpha1",
        True,
        True,
        {"status": {}},
    )


def test_everything_an_agent_writes_fits_the_crd_schema_so_nothing_is_pruned() -> None:
    from inventory.domain.readings import DeviceAssignment  # noqa: PLC0415
    from tests.inventory.gpunodes import SEVEN_SMALL, gpu  # noqa: PLC0415
    from tests.inventory.gpunodes import gpunode as agent_gpunode  # noqa: PLC0415

    assignments = [DeviceAssignment("ml", "p", "c", "nvidia.com/mig-1g.10gb", ("MIG-n1-0-0",))]
    body = agent_gpunode(
        "n1", [gpu(0, node="n1", mig=SEVEN_SMALL), gpu(1, node="n1")], assignments=assignments
    )
    body["status"]["gpus"][1] |= {
        "powerWatts": 312.5,
        "eccVolatileUncorrected": 0,
        "error": "x",
        "retiredPagesPending": False,
        "remappedRowsPending": False,
    }
    validator = Draft202012Validator(closed(crd_status_schema()))
    assert [error.message for error in validator.iter_errors(body["status"])] == []
