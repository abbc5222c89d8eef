"""The extender wire format against kube-scheduler's own shapes (``tests/data/k8s/extender-*``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from extender import wire
from extender.service import FilterOutcome, Victims
from tests.support.data import K8S_FIXTURES

FIXTURES = K8S_FIXTURES
ARGS = sorted(FIXTURES.glob("extender-*args*.json"))
UID = "3b9d6f1a-2c4e-4f8a-b6d0-1e3c5a7b9d2f"
VICTIM = "7d9f1b3e-5a7c-4e9b-8d2f-4a6c8e0b2d4f"
REASON = "gpu-manager: 2 whole GPUs requested, 1 free after reservations"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def parse(path: Path, document: Any) -> Any:
    body = orjson.dumps(document)
    if "bind" in path.name:
        return wire.parse_binding_args(body)
    if "preemption" in path.name:
        return wire.parse_preemption_args(body)
    return wire.parse_extender_args(body)


def lower_keys(value: Any, *, deep: bool) -> Any:
    """Keys lower-cased: the extender's own structs only, or (deep) everything, as TestCompatibility does.

    The Pod and Node objects have JSON tags, so kube-scheduler never writes them in another case."""
    if isinstance(value, list):
        return [lower_keys(item, deep=deep) for item in value]
    if not isinstance(value, dict):
        return value
    if not deep and "metadata" in value:  # a Kubernetes object (Pod, Node, NodeList): left as written
        return value
    return {key.lower(): lower_keys(item, deep=deep) for key, item in value.items()}


def test_there_is_a_fixture_for_every_call() -> None:
    assert [path.name for path in ARGS] == [
        "extender-bind-args.json",
        "extender-filter-args-nodecache.json",
        "extender-filter-args.json",
        "extender-preemption-args-nodecache.json",
        "extender-prioritize-args.json",
    ]


EXPECTED: dict[str, Any] = {
    "extender-bind-args.json": wire.BindingCall(
        namespace="ml-training", name="llama3-finetune-x7k2p", uid=UID, node="gpu-h100-01"
    ),
    "extender-filter-args-nodecache.json": ("nodecache", ["gpu-a100-01", "gpu-h100-01", "gpu-h100nvl-01"]),
    "extender-filter-args.json": ("nodes", ["gpu-a100-01", "gpu-h100-01", "gpu-h100nvl-01"]),
    "extender-preemption-args-nodecache.json": ({"gpu-a100-01": Victims([VICTIM], 0)}, False),
    "extender-prioritize-args.json": ("nodecache", ["gpu-a100-01", "gpu-h100-01"]),
}


@pytest.mark.parametrize("path", ARGS, ids=lambda path: path.name)
def test_every_call_fixture_parses_to_what_it_says(path: Path) -> None:
    document = load(path.name)
    call = parse(path, document)
    expected = EXPECTED[path.name]
    if isinstance(call, wire.BindingCall):
        assert call == expected
        return
    assert call.pod is not None and call.pod_ref == "ml-training/llama3-finetune-x7k2p"
    if isinstance(call, wire.PreemptionCall):
        assert (call.victims, call.full_victims) == expected
        return
    mode, names = expected
    assert call.node_names == names
    assert call.node_cache_capable is (mode == "nodecache")
    assert call.nodes == (document["Nodes"]["items"] if mode == "nodes" else None)


@pytest.mark.parametrize("deep", [False, True], ids=["struct keys", "every key"])
@pytest.mark.parametrize("path", ARGS, ids=lambda path: path.name)
def test_lower_cased_keys_parse_like_the_go_names(path: Path, deep: bool) -> None:
    document = load(path.name)
    lowered = parse(path, lower_keys(document, deep=deep))
    original = parse(path, document)
    if not deep:
        assert lowered == original
    elif isinstance(original, wire.PreemptionCall):
        assert (lowered.victims, lowered.full_victims) == (original.victims, original.full_victims)
    elif isinstance(original, wire.ExtenderCall):
        assert (lowered.node_names, lowered.node_cache_capable) == (
            original.node_names,
            original.node_cache_capable,
        )
    else:
        assert lowered == original


@pytest.mark.parametrize(
    ("obj", "name", "found"),
    [
        pytest.param({"NodeNames": ["a"]}, "NodeNames", ["a"], id="exact"),
        pytest.param({"nodenames": ["a"]}, "NodeNames", ["a"], id="lower"),
        pytest.param({"NODENAMES": ["a"]}, "NodeNames", ["a"], id="upper"),
        pytest.param({"nodeNames": ["a"]}, "NodeNames", ["a"], id="camel"),
        pytest.param({"NodeNames": None}, "NodeNames", None, id="null"),
        pytest.param({"Nodes": ["a"]}, "NodeNames", None, id="absent"),
        pytest.param({"NodeNames": ["exact"], "nodenames": ["b"]}, "NodeNames", ["exact"], id="exact first"),
        pytest.param({"\u212aey": 1}, "Key", 1, id="Kelvin sign folds to k, as in Go"),
    ],
)
def test_field_matches_keys_as_go_does(obj: dict[str, Any], name: str, found: Any) -> None:
    assert wire.field(obj, name) == found


def test_filter_reply_in_node_cache_mode_is_the_fixture() -> None:
    call = wire.parse_extender_args((FIXTURES / "extender-filter-args-nodecache.json").read_bytes())
    outcome = FilterOutcome(passed=["gpu-a100-01", "gpu-h100-01"], failed={"gpu-h100nvl-01": REASON})
    assert orjson.loads(wire.filter_result(call, outcome)) == load("extender-filter-result-nodecache.json")


def test_filter_reply_with_full_nodes_echoes_only_the_passing_nodes_unchanged() -> None:
    document = load("extender-filter-args.json")
    call = wire.parse_extender_args(orjson.dumps(document))
    outcome = FilterOutcome(passed=["gpu-a100-01", "gpu-h100nvl-01"], unresolvable={"gpu-h100-01": "no"})
    reply = orjson.loads(wire.filter_result(call, outcome))
    items = document["Nodes"]["items"]
    assert reply == {
        "Nodes": {"metadata": {}, "items": [items[0], items[2]]},
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {"gpu-h100-01": "no"},
        "Error": "",
    }


def test_filter_reply_never_drops_a_node_silently_nor_passes_one_it_was_not_asked_about() -> None:
    call = wire.parse_extender_args((FIXTURES / "extender-filter-args-nodecache.json").read_bytes())
    outcome = FilterOutcome(
        passed=["gpu-a100-01", "elsewhere", "gpu-a100-01"], failed={"gpu-h100-01": "full"}
    )
    reply = orjson.loads(wire.filter_result(call, outcome))
    assert reply["NodeNames"] == ["gpu-a100-01"]
    assert reply["FailedNodes"] == {"gpu-h100-01": "full"}
    assert set(reply["FailedAndUnresolvableNodes"]) == {"gpu-h100nvl-01"}
    assert "without a reason" in reply["FailedAndUnresolvableNodes"]["gpu-h100nvl-01"]


def test_filter_error_has_every_field_of_the_result_and_only_error_set() -> None:
    reply = orjson.loads(wire.filter_error(None, "no Pod in the call"))
    assert set(reply) == set(load("extender-filter-result-nodecache.json"))
    assert reply == {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": "no Pod in the call",
    }


def test_prioritize_reply_is_the_fixture_and_clamps_scores_to_0_10() -> None:
    scores = {"gpu-a100-01": 3, "gpu-h100-01": 8}
    assert orjson.loads(wire.prioritize_result(scores)) == load("extender-prioritize-result.json")
    clamped = orjson.loads(wire.prioritize_result({"a": -4, "b": 99}))
    assert clamped == [{"Host": "a", "Score": 0}, {"Host": "b", "Score": 10}]
    assert orjson.loads(wire.prioritize_result({})) == []
    # A name that needs escaping takes the general path and still makes valid JSON.
    assert orjson.loads(wire.prioritize_result({'a"b\\c': 5})) == [{"Host": 'a"b\\c', "Score": 5}]


def test_bind_reply_is_the_fixture_on_success_and_carries_the_error_otherwise() -> None:
    assert orjson.loads(wire.binding_result(None)) == load("extender-bind-result.json")
    assert orjson.loads(wire.binding_result("pod was deleted")) == {"Error": "pod was deleted"}


def test_preemption_reply_is_the_fixture() -> None:
    call = wire.parse_preemption_args((FIXTURES / "extender-preemption-args-nodecache.json").read_bytes())
    assert orjson.loads(wire.preemption_result(call.victims)) == load("extender-preemption-result.json")


def test_full_victims_are_read_by_metadata_uid_and_answered_as_meta_victims() -> None:
    document = load("extender-preemption-args-nodecache.json")
    victim = copy.deepcopy(document["Pod"])
    victim["metadata"]["uid"] = VICTIM
    document["NodeNameToMetaVictims"] = None
    document["NodeNameToVictims"] = {"gpu-a100-01": {"Pods": [victim], "NumPDBViolations": 1}}
    call = wire.parse_preemption_args(orjson.dumps(document))
    assert call.full_victims is True
    assert call.victims == {"gpu-a100-01": Victims([VICTIM], 1)}
    assert orjson.loads(wire.preemption_result(call.victims)) == {
        "NodeNameToMetaVictims": {"gpu-a100-01": {"Pods": [{"UID": VICTIM}], "NumPDBViolations": 1}}
    }


def test_preemption_error_offers_no_victims() -> None:
    assert orjson.loads(wire.preemption_error("boom")) == {"NodeNameToMetaVictims": {}, "Error": "boom"}


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}}


@pytest.mark.parametrize(
    ("parser", "body", "says"),
    [
        (wire.parse_extender_args, {"NodeNames": ["a"]}, "no Pod"),
        (wire.parse_extender_args, {"Pod": "p", "NodeNames": ["a"]}, "Pod is not an object"),
        (
            wire.parse_extender_args,
            {"Pod": POD, "Nodes": None, "NodeNames": None},
            "neither Nodes nor NodeNames",
        ),
        (wire.parse_extender_args, {"Pod": POD}, "neither Nodes nor NodeNames"),
        (wire.parse_extender_args, {"Pod": POD, "NodeNames": "a"}, "NodeNames is not a list of strings"),
        (wire.parse_extender_args, {"Pod": POD, "NodeNames": [1]}, "NodeNames is not a list of strings"),
        (wire.parse_extender_args, {"Pod": POD, "Nodes": []}, "Nodes is not a NodeList"),
        (wire.parse_extender_args, {"Pod": POD, "Nodes": {"items": {}}}, "Nodes is not a NodeList"),
        (
            wire.parse_extender_args,
            {"Pod": POD, "Nodes": {"items": [{}]}},
            "Nodes.items[0] has no metadata.name",
        ),
        (wire.parse_binding_args, {"PodName": "p", "PodNamespace": "ns", "PodUID": "u"}, "Node is missing"),
        (
            wire.parse_binding_args,
            {"PodName": "", "PodNamespace": "ns", "PodUID": "u", "Node": "n"},
            "PodName",
        ),
        (wire.parse_binding_args, {"PodName": "p", "PodNamespace": "ns", "PodUID": 7, "Node": "n"}, "PodUID"),
        (wire.parse_preemption_args, {"NodeNameToMetaVictims": {}}, "no Pod"),
        (wire.parse_preemption_args, {"Pod": POD}, "neither NodeNameToVictims nor NodeNameToMetaVictims"),
        (wire.parse_preemption_args, {"Pod": POD, "NodeNameToMetaVictims": []}, "is not an object"),
        (wire.parse_preemption_args, {"Pod": POD, "NodeNameToMetaVictims": {"n": 1}}, "victims on n are not"),
        (
            wire.parse_preemption_args,
            {"Pod": POD, "NodeNameToMetaVictims": {"n": {"Pods": [{}]}}},
            "has no UID",
        ),
        (
            wire.parse_preemption_args,
            {"Pod": POD, "NodeNameToMetaVictims": {"n": {"Pods": [], "NumPDBViolations": "1"}}},
            "NumPDBViolations on n is not an integer",
        ),
        (
            wire.parse_preemption_args,
            {"Pod": POD, "NodeNameToVictims": {"n": {"Pods": [{"metadata": {}}]}}},
            "has no metadata.uid",
        ),
    ],
)
def test_unusable_calls_are_wire_errors_that_say_why(parser: Any, body: Any, says: str) -> None:
    with pytest.raises(wire.WireError) as raised:
        parser(orjson.dumps(body))
    assert not isinstance(raised.value, wire.MalformedBodyError)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    "parser", [wire.parse_extender_args, wire.parse_binding_args, wire.parse_preemption_args]
)
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1]", "not a JSON object but an array"),
        (b"null", "but null"),
        (b"2", "but a number"),
    ],
)
def test_bodies_that_are_not_json_objects_are_malformed(parser: Any, body: bytes, says: str) -> None:
    with pytest.raises(wire.MalformedBodyError) as raised:
        parser(body)
    assert says in str(raised.value)


def test_null_pods_and_violations_read_as_go_zero_values() -> None:
    body = {"Pod": POD, "NodeNameToMetaVictims": {"n": {"Pods": None, "NumPDBViolations": None}}}
    assert wire.parse_preemption_args(orjson.dumps(body)).victims == {"n": Victims([], 0)}
    nodes = wire.parse_extender_args(orjson.dumps({"Pod": POD, "Nodes": {"metadata": {}, "items": None}}))
    assert (nodes.node_names, nodes.nodes, nodes.node_cache_capable) == ([], [], False)
