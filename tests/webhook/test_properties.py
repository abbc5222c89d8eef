"""Properties over generated pods: the patch always applies to a valid pod, a second pass changes
nothing, and the server never answers 500."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from kgm.server import build_app
from tests.support.k8s_openapi import default_schemas
from webhook.mutation import Admit, mutate_pod
from webhook.settings import WebhookSettings

OFFER = offer_of(load_cluster("demo"))
SETTINGS = WebhookSettings()
GPU_RESOURCES = [
    "nvidia.com/gpu",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-3g.40gb",
    "nvidia.com/mig-3g.47gb",
]

counts = st.sampled_from(["1", "1", "1", "2", "4", "8"])
resource_maps = st.dictionaries(
    st.sampled_from([*GPU_RESOURCES, "cpu", "memory"]),
    counts,
    max_size=3,
)


@st.composite
def containers(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    found = []
    for i in range(draw(st.integers(0, 3))):
        limits = draw(resource_maps)
        c: dict[str, Any] = {"name": f"{prefix}{i}", "image": "busybox"}
        if limits:
            shape = draw(st.sampled_from(["both", "limits"]))
            c["resources"] = {"limits": limits} | ({"requests": dict(limits)} if shape == "both" else {})
        if prefix == "init" and draw(st.booleans()):
            c["restartPolicy"] = "Always"
        found.append(c)
    return found


annotation_values = {
    "gpu.kgm.io/memory-gb": st.sampled_from(["5", "10", "18", "40", "45", "79", "0.5"]),
    "gpu.kgm.io/workload-type": st.sampled_from(["Training", "Inference", "Development", "inference"]),
    "gpu.kgm.io/use-mig": st.sampled_from(["true", "false", "True"]),
    "gpu.kgm.io/team": st.sampled_from(["nlp", "vision-2", "a.b_c"]),
    "gpu.kgm.io/user": st.sampled_from(["alice@example.com", "bob"]),
    "app.kubernetes.io/name~odd/key": st.just("x"),
}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "p-", "namespace": "ml"}
    keys = draw(st.sets(st.sampled_from(sorted(annotation_values))))
    if keys or draw(st.booleans()):
        metadata["annotations"] = {k: draw(annotation_values[k]) for k in keys}
    if draw(st.booleans()):
        metadata["labels"] = draw(
            st.dictionaries(
                st.sampled_from(["app", "gpu.kgm.io/team", "gpu.kgm.io/gpu-profile"]), st.just("v")
            )
        )
    spec: dict[str, Any] = {"containers": draw(containers("c")) or [{"name": "main", "image": "busybox"}]}
    init = draw(containers("init"))
    if init:
        spec["initContainers"] = init
    scheduler = draw(st.sampled_from([None, "", "default-scheduler", "volcano"]))
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    if draw(st.booleans()):
        spec["nodeSelector"] = {
            "nvidia.com/gpu.product": draw(
                st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-NVL", "nope"])
            )
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_the_patch_applies_yields_a_valid_pod_and_a_second_pass_changes_nothing(p: dict[str, Any]) -> None:
    decision = mutate_pod(p, namespace="ml", offer=OFFER, settings=SETTINGS)
    if not isinstance(decision, Admit):
        return  # a denial: nothing to apply (denials are covered by their own table)
    result = jsonpatch.apply_patch(copy.deepcopy(p), decision.patch)
    default_schemas().validate(result, "io.k8s.api.core.v1.Pod")
    assert mutate_pod(result, namespace="ml", offer=OFFER, settings=SETTINGS) == Admit()


APP = build_app(offer=lambda: OFFER, webhook=SETTINGS, registry=CollectorRegistry())
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def reviews(draw: st.DrawFn) -> bytes:
    base: dict[str, Any] = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
            "namespace": "ml",
            "object": draw(pods()),
        },
    }
    # Replace one part of the review, at some depth, with arbitrary JSON.
    where = draw(st.sampled_from(["", "request", "object", "metadata", "spec", "containers", "none"]))
    value = draw(junk)
    request, obj = base["request"], base["request"]["object"]
    targets: dict[str, tuple[dict[str, Any], str]] = {
        "request": (base, "request"),
        "object": (request, "object"),
        "metadata": (obj, "metadata"),
        "spec": (obj, "spec"),
        "containers": (obj["spec"], "containers"),
    }
    if where == "":
        return json.dumps(value).encode()
    if where in targets:
        parent, key = targets[where]
        parent[key] = value
    return json.dumps(base).encode()


@settings(max_examples=200, deadline=None)
@given(reviews())
def test_the_server_never_answers_500(body: bytes) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
            return await client.post("/mutate", content=body)

    reply = asyncio.run(go())
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 200:
        response = reply.json()["response"]
        assert response["uid"] == "u-1"
        assert response.get("status", {}).get("reason") != "InternalError", response
