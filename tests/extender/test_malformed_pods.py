"""A pod the extender cannot read, or whose GPU count Kubernetes refuses, gets a refusal naming the
field (filter and preempt: ``Error``; prioritize, which has no Error field: HTTP 400), never a 500;
GPU counts in every quantity form are read as Kubernetes reads them."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from kgm.web.routes import build_extender_app
from tests.extender.clusters import extender, gpu_pod, node
from tests.extender.test_app import Harness

NODES = ["whole", "mig"]
OUTCOMES = {"ok", "refused", "invalid", "bad_request", "error"}
_REQUIRED = ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"]


def harness() -> Harness:
    ext, _ = extender([node("whole", count=8), node("mig", mig=["3g.40gb", "3g.40gb"])])
    registry = CollectorRegistry()
    app = build_extender_app(ext, registry=registry)
    return Harness(service=None, registry=registry, app=app)  # type: ignore[arg-type]


def good_pod() -> dict[str, Any]:
    return gpu_pod("u-1", {"nvidia.com/gpu": "1"}, node_selector={"nvidia.com/gpu.product": "NVIDIA-H100"})


def with_affinity(expression: dict[str, Any]) -> dict[str, Any]:
    p = good_pod()
    p["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }
    return p


def changed(path: list[str | int], value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    p = copy.deepcopy(base if base is not None else good_pod())
    target: Any = p
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return p


LIMITS: list[str | int] = ["spec", "containers", 0, "resources", "limits"]
EXPRESSION = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100"]}
TERMS = [*_REQUIRED, "nodeSelectorTerms"]

MALFORMED = [
    pytest.param(changed(["metadata"], "x"), "metadata", id="metadata a string"),
    pytest.param(changed(["metadata"], [1]), "metadata", id="metadata a list"),
    pytest.param(
        changed(["metadata", "annotations"], "x"), "metadata.annotations", id="annotations a string"
    ),
    pytest.param(
        changed(["metadata", "annotations"], {"gpu.kgm.io/memory-gb": 5}),
        "metadata.annotations[gpu.kgm.io/memory-gb]",
        id="an annotation a number",
    ),
    pytest.param(changed(["spec"], "x"), "spec", id="spec a string"),
    pytest.param(changed(["spec"], 7), "spec", id="spec a number"),
    pytest.param(changed(["spec", "containers"], "x"), "spec.containers", id="containers a string"),
    pytest.param(changed(["spec", "containers"], {"a": 1}), "spec.containers", id="containers an object"),
    pytest.param(
        changed(["spec", "initContainers"], 3), "spec.initContainers", id="init containers a number"
    ),
    pytest.param(changed(["spec", "containers", 0], "x"), "spec.containers[0]", id="a container a string"),
    pytest.param(
        changed(["spec", "containers", 0, "resources"], "x"), "spec.containers[0].resources", id="resources"
    ),
    pytest.param(changed(LIMITS, ["1"]), "spec.containers[0].resources.limits", id="limits a list"),
    pytest.param(
        changed([*LIMITS, "nvidia.com/gpu"], "99999999999999999999"),
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
        id="an absurd count",
    ),
    pytest.param(
        changed([*LIMITS, "nvidia.com/gpu"], "1.5"), "limits[nvidia.com/gpu]", id="a fractional count"
    ),
    pytest.param(changed([*LIMITS, "nvidia.com/gpu"], "-2"), "limits[nvidia.com/gpu]", id="a negative count"),
    pytest.param(changed([*LIMITS, "nvidia.com/gpu"], "two"), "limits[nvidia.com/gpu]", id="a word"),
    pytest.param(changed([*LIMITS, "nvidia.com/gpu"], {"n": 1}), "limits[nvidia.com/gpu]", id="an object"),
    pytest.param(changed([*LIMITS, "nvidia.com/gpu"], True), "limits[nvidia.com/gpu]", id="a boolean"),
    pytest.param(changed(["spec", "nodeSelector"], "x"), "spec.nodeSelector", id="nodeSelector a string"),
    pytest.param(
        changed(["spec", "nodeSelector"], {"nvidia.com/gpu.product": 5}),
        "spec.nodeSelector[nvidia.com/gpu.product]",
        id="a node selector value a number",
    ),
    pytest.param(changed(["spec", "affinity"], "x"), "spec.affinity", id="affinity a string"),
    pytest.param(
        changed(["spec", "affinity"], {"nodeAffinity": 1}), "nodeAffinity", id="nodeAffinity a number"
    ),
    pytest.param(
        changed(["spec", "affinity"], {"nodeAffinity": {_REQUIRED[-1]: []}}),
        _REQUIRED[-1],
        id="required a list",
    ),
    pytest.param(
        changed(TERMS, "x", changed(["spec", "affinity"], {"nodeAffinity": {_REQUIRED[-1]: {}}})),
        "nodeSelectorTerms",
        id="terms a string",
    ),
    pytest.param(with_affinity({**EXPRESSION, "values": 5}), "matchExpressions[0].values", id="values 5"),
    pytest.param(with_affinity({**EXPRESSION, "values": "NVIDIA-H100"}), ".values", id="values a string"),
    pytest.param(with_affinity({**EXPRESSION, "values": [5]}), ".values[0]", id="a value a number"),
    pytest.param(with_affinity({**EXPRESSION, "key": 5}), "matchExpressions[0].key", id="key a number"),
    pytest.param(with_affinity({**EXPRESSION, "operator": None}), ".operator", id="no operator"),
    pytest.param(with_affinity("x"), "matchExpressions[0]", id="an expression a string"),  # type: ignore[arg-type]
]


def _filter_args(pod: Any) -> bytes:
    return orjson.dumps({"Pod": pod, "NodeNames": NODES})


@pytest.mark.parametrize(("pod", "field"), MALFORMED)
def test_filter_refuses_a_malformed_pod_in_error_naming_the_field(pod: dict[str, Any], field: str) -> None:
    h = harness()
    reply = h.post("filter", _filter_args(pod))
    assert reply.status_code == 200
    result = reply.json()
    assert field in result["Error"]
    assert result["NodeNames"] is None
    assert h.count("filter", "invalid") == 1


@pytest.mark.parametrize(("pod", "field"), MALFORMED)
def test_prioritize_refuses_a_malformed_pod_with_400_naming_the_field(
    pod: dict[str, Any], field: str
) -> None:
    h = harness()
    reply = h.post("prioritize", _filter_args(pod))
    assert reply.status_code == 400
    assert field in reply.json()["error"]["message"]
    assert h.count("prioritize", "invalid") == 1


@pytest.mark.parametrize(("pod", "field"), MALFORMED)
def test_preempt_refuses_a_malformed_pod_evicting_nothing(pod: dict[str, Any], field: str) -> None:
    h = harness()
    args = {"Pod": pod, "NodeNameToMetaVictims": {"whole": {"Pods": [{"UID": "v-1"}], "NumPDBViolations": 0}}}
    reply = h.post("preempt", orjson.dumps(args))
    assert reply.status_code == 200
    assert reply.json()["NodeNameToMetaVictims"] == {}
    assert field in reply.json()["Error"]


junk: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], [None], {}, {"": None}, [[[]]], {"a": {"b": {}}}]


@pytest.mark.parametrize("value", junk, ids=repr)
@pytest.mark.parametrize(
    "path",
    [
        ["metadata"],
        ["metadata", "annotations"],
        ["metadata", "uid"],
        ["spec"],
        ["spec", "containers"],
        ["spec", "containers", 0],
        ["spec", "containers", 0, "resources"],
        LIMITS,
        [*LIMITS, "nvidia.com/gpu"],
        ["spec", "nodeSelector"],
        ["spec", "affinity"],
    ],
    ids=lambda path: ".".join(map(str, path)),
)
def test_no_shape_of_pod_makes_a_verb_fail_inside(path: list[str | int], value: Any) -> None:
    h = harness()
    body = _filter_args(changed(path, value))
    for verb in ("filter", "prioritize"):
        reply = h.post(verb, body)
        assert reply.status_code in (200, 400), reply.text
        assert h.count(verb, "error") is None
    samples = [s for m in h.registry.collect() for s in m.samples if s.name == "kgm_extender_requests_total"]
    assert {s.labels["outcome"] for s in samples} <= OUTCOMES


@pytest.mark.parametrize("count", ["1k", "2Ki", "1e3"])
def test_a_count_in_another_quantity_form_is_judged_not_waved_through(count: str) -> None:
    h = harness()
    reply = h.post("filter", _filter_args(gpu_pod("u-2", {"nvidia.com/gpu": count})))
    result = reply.json()
    assert result["Error"] == ""
    assert result["NodeNames"] == []
    assert set(result["FailedAndUnresolvableNodes"]) == set(NODES)
    assert "whole GPUs requested" in result["FailedAndUnresolvableNodes"]["whole"]


@pytest.mark.parametrize(("count", "passed"), [("1000m", NODES[:1]), ("1e0", NODES[:1]), ("0", NODES)])
def test_a_whole_count_in_any_form_is_that_many_gpus(count: str, passed: list[str]) -> None:
    h = harness()
    reply = h.post("filter", _filter_args(gpu_pod("u-3", {"nvidia.com/gpu": count})))
    assert reply.json()["NodeNames"] == passed
