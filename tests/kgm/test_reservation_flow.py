"""A reservation from its API call to its pod's allocation, through `kgm serve`'s own app (standalone):
reserve -> the webhook pins the claiming pod -> the extender passes only the reserved node and binds
it onto the held room -> the reconciler turns the reservation into the pod's allocation."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import yaml
from prometheus_client import CollectorRegistry

from kgm.assembly import static_parts
from kgm.server import assembled_app, build_app
from kgm.settings import ServeSettings
from tests.webhook.pods import gpus, pod


def test_a_reserved_slice_goes_to_the_pod_that_claims_it(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"token": "s3cret-user-token", "name": "alice", "role": "USER"}]))
    settings = ServeSettings(inventory="demo", api_tokens=tokens)
    registry = CollectorRegistry()
    app, _ = assembled_app(settings, registry)

    async def call(method: str, path: str, body: Any) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://kgm"
        ) as client:
            return await client.request(
                method, path, content=json.dumps(body), headers={"Authorization": "Bearer s3cret-user-token"}
            )

    def post(path: str, body: Any) -> Any:
        return asyncio.run(call("POST", path, body)).json()

    reserved = post(
        "/api/v1/gpu/allocations",
        {
            "namespace": "ml",
            "podName": "llm-serve",
            "workloadType": "Inference",
            "requiredMemoryGb": 40,
            "userId": "alice",
            "teamId": "nlp",
            "maxDurationHours": 2,
        },
    )["data"]
    assert reserved["allocatedResource"] == "nvidia.com/mig-3g.40gb"
    node, allocation_id = reserved["nodeName"], reserved["allocationId"]

    claiming = pod(gpus(1), annotations={"gpu.kgm.io/allocation-id": allocation_id})
    claiming["metadata"].update({"name": "llm-serve", "uid": "uid-llm-serve"})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "ml",
            "object": claiming,
        },
    }
    answer = post("/mutate", review)["response"]
    admitted = jsonpatch.apply_patch(copy.deepcopy(claiming), json.loads(base64.b64decode(answer["patch"])))
    assert admitted["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert admitted["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }

    nodes = ["gpu-a100-01", "gpu-h100-01", "gpu-h100-02", "gpu-h100nvl-01"]
    filtered = post("/extender/filter", {"Pod": admitted, "Nodes": None, "NodeNames": nodes})
    assert filtered["NodeNames"] == [node]
    assert all(
        reason.startswith("pinned to node") for reason in filtered["FailedAndUnresolvableNodes"].values()
    )
    bound = post(
        "/extender/bind",
        {"PodName": "llm-serve", "PodNamespace": "ml", "PodUID": "uid-llm-serve", "Node": node},
    )
    assert bound == {"Error": ""}

    row = asyncio.run(call("GET", f"/api/v1/gpu/allocations/{allocation_id}", None)).json()["data"]
    assert (row["status"], row["podUid"], row["nodeName"]) == ("active", "uid-llm-serve", node)


def test_a_pod_naming_no_open_reservation_is_refused() -> None:
    settings = ServeSettings(inventory="demo")
    parts = static_parts(settings, CollectorRegistry())
    app = build_app(
        offer=parts.offer,
        webhook=settings.webhook,
        registry=CollectorRegistry(),
        reservation=parts.reservation,
    )
    claiming = pod(gpus(1), annotations={"gpu.kgm.io/allocation-id": "no-such-reservation"})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "ml",
            "object": claiming,
        },
    }

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://kgm"
        ) as client:
            return await client.post("/mutate", content=json.dumps(review))

    response = asyncio.run(go()).json()["response"]
    assert response["allowed"] is False
    assert "is not an open reservation in namespace ml" in response["status"]["message"]
