"""Attacks on admission: GPU counts in any quantity form, absurd counts, huge pods, label values
chosen by the caller, and a later webhook undoing our routing."""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from inventory.domain.offer import Offer
from kgm.server import build_app
from tests.webhook.pods import apply, gpus, pod
from tests.webhook.test_bad_input import asgi_post, review
from webhook.mutation import ANNOTATIONS_LIMIT_BYTES, MAX_GPU_CONTAINERS, Admit, Deny, mutate_pod
from webhook.settings import WebhookSettings

SETTINGS = WebhookSettings()
MEM = "gpu.kgm.io/memory-gb"
OPERATIONS = {"CREATE", "UPDATE", "DELETE", "CONNECT", "other", ""}
OUTCOMES = {"mutated", "unchanged", "denied", "bad_request", "error"}


def judge(p: dict[str, Any], offer: Offer) -> Admit | Deny:
    return mutate_pod(p, namespace="ml", offer=offer, settings=SETTINGS)


# -- quantities --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "profile"),
    [
        pytest.param("1k", "gpu", id="kilo"),
        pytest.param("2Ki", "gpu", id="kibi"),
        pytest.param("1e3", "gpu", id="exponent"),
        pytest.param("1000m", "mig-1g.10gb", id="one GPU written in milli moves to MIG"),
        pytest.param("1e0", "mig-1g.10gb", id="one GPU as an exponent moves to MIG"),
    ],
)
def test_a_gpu_count_in_any_quantity_form_is_a_gpu_pod(count: str, profile: str, demo_offer: Offer) -> None:
    p = pod(gpus(count), annotations={MEM: "10"})
    decision = judge(p, demo_offer)
    assert isinstance(decision, Admit) and decision.patch, "read as no GPU: the pod was not judged"
    result = apply(p, decision)
    assert result["metadata"]["labels"]["gpu.kgm.io/gpu-profile"] == profile
    assert result["spec"]["schedulerName"] == "kgm-scheduler"


@pytest.mark.parametrize(
    ("count", "says"),
    [
        pytest.param("99999999999999999999", "more than any node holds", id="past int64"),
        pytest.param("1e30", "more than any node holds", id="an exponent past int64"),
        pytest.param("1.5", "must be an integer", id="fractional"),
        pytest.param("-1", "greater than or equal to 0", id="negative"),
        pytest.param("lots", "not a quantity", id="not a quantity"),
    ],
)
def test_a_gpu_count_kubernetes_refuses_is_denied_422_naming_the_field(
    count: str, says: str, demo_offer: Offer
) -> None:
    decision = judge(pod(gpus(count)), demo_offer)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.reason) == (422, "Invalid")
    assert "spec.containers[0].resources.limits[nvidia.com/gpu]" in decision.message
    assert says in decision.message


def test_an_absurd_count_over_https_is_a_422_denial_not_an_internal_error(client: httpx.Client) -> None:
    body = review(object=pod(gpus("99999999999999999999")))
    response = client.post("/mutate", content=json.dumps(body)).json()["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert "nvidia.com/gpu" in response["status"]["message"]


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"spec": "x"}, id="spec a string"),
        pytest.param({"spec": {"containers": "x"}}, id="containers a string"),
        pytest.param(
            {"spec": {"containers": [{"name": "a", "resources": {"limits": []}}]}}, id="limits a list"
        ),
    ],
)
def test_a_pod_of_the_wrong_shape_is_denied_400_naming_the_field(
    obj: dict[str, Any], demo_offer: Offer
) -> None:
    decision = judge(obj, demo_offer)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.reason) == (400, "BadRequest")
    assert "spec" in decision.message


JUNK: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], [None], {}, {"": None}, [[[]]], {"a": {"b": {}}}]
ODD_PLACES = [
    ["metadata"],
    ["metadata", "annotations"],
    ["metadata", "labels"],
    ["metadata", "annotations", MEM],
    ["metadata", "labels", "gpu.kgm.io/team"],
    ["spec"],
    ["spec", "containers"],
    ["spec", "containers", 0],
    ["spec", "containers", 0, "name"],
    ["spec", "containers", 0, "resources"],
    ["spec", "containers", 0, "resources", "limits"],
    ["spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"],
    ["spec", "nodeSelector"],
    ["spec", "nodeSelector", "nvidia.com/gpu.product"],
    ["spec", "schedulerName"],
    ["spec", "initContainers"],
]


@pytest.mark.parametrize("value", JUNK, ids=repr)
@pytest.mark.parametrize("place", ODD_PLACES, ids=lambda place: ".".join(map(str, place)))
def test_no_shape_of_pod_makes_admission_fail_inside(
    place: list[str | int], value: Any, demo_offer: Offer
) -> None:
    p = pod(
        gpus(1), annotations={MEM: "10"}, labels={"app": "x"}, node_selector={"nvidia.com/gpu.product": "x"}
    )
    target: Any = p
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value
    decision = judge(p, demo_offer)  # raising here was an InternalError denial
    assert isinstance(decision, Admit) or decision.code in (400, 403, 422)


# -- many containers ---------------------------------------------------------------------------------


def _wide_pod(containers: int) -> dict[str, Any]:
    return pod(*(gpus(1, name=f"c{i}") for i in range(containers)), annotations={MEM: "10"})


def _best_of(runs: int, p: dict[str, Any], offer: Offer) -> float:
    """The least CPU time of this thread over ``runs`` (other processes on the machine do not count;
    no collection runs inside, whose cost depends on everything else alive)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            started = time.thread_time()
            decision = judge(p, offer)
            best = min(best, time.thread_time() - started)
            assert isinstance(decision, Admit) and decision.patch
    finally:
        gc.enable()
    return best


def test_admission_time_grows_linearly_with_the_number_of_containers(demo_offer: Offer) -> None:
    """Four times the containers, about four times the time (quadratic was sixteen: 10,000 took 7 s)."""
    small, large = _wide_pod(2_000), _wide_pod(8_000)
    ratio = _best_of(5, large, demo_offer) / _best_of(5, small, demo_offer)
    assert ratio < 8, f"8,000 containers took {ratio:.1f} times as long as 2,000"


def test_a_pod_of_8000_gpu_containers_is_mutated_with_a_bounded_answer(demo_offer: Offer) -> None:
    p = _wide_pod(8_000)
    decision = judge(p, demo_offer)
    assert isinstance(decision, Admit)
    result = apply(p, decision)
    assert all(
        c["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"} for c in result["spec"]["containers"]
    )
    # Warnings name a few containers and count the rest: the API server keeps only a few KB of them.
    assert len(decision.warnings) <= 10
    assert "7992 more containers" in decision.warnings[-1]


def test_a_pod_whose_annotations_we_would_take_past_the_api_servers_limit_is_denied(
    demo_offer: Offer,
) -> None:
    p = pod(*(gpus(1, name=f"worker-{i:06d}") for i in range(9_000)), annotations={MEM: "10"})
    decision = judge(p, demo_offer)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.reason) == (422, "Invalid")
    assert "metadata.annotations: Too long" in decision.message
    assert str(ANNOTATIONS_LIMIT_BYTES) in decision.message


def test_reading_stops_past_the_gpu_containers_any_admissible_pod_can_have(demo_offer: Offer) -> None:
    """A 3 MiB review holds some 50,000 containers: past MAX_GPU_CONTAINERS the pod we would produce
    cannot be stored, so the rest is not even read (the fractional count far behind goes unseen)."""
    containers = [gpus(1, name=f"c{i}") for i in range(20_000)]
    containers[15_000] = gpus("1.5", name="late")
    decision = judge(pod(*containers), demo_offer)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.reason) == (422, "Invalid")
    assert f"more than {MAX_GPU_CONTAINERS} containers hold GPU resources" in decision.message
    assert "annotations past the 262144 bytes" in decision.message


# -- labels --------------------------------------------------------------------------------------------


def _series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [
        sample.labels for metric in registry.collect() for sample in metric.samples if sample.name == name
    ]


def test_operations_the_caller_makes_up_never_become_label_values(demo_offer: Offer) -> None:
    """300 reviews with distinct 1 MB operations once made 300 series of 1 MB each."""
    registry = CollectorRegistry()
    app = build_app(offer=lambda: demo_offer, webhook=SETTINGS, registry=registry)
    for i in range(300):
        body = review(operation=f"{i}-" + "X" * 10_000, object=pod(gpus(1)))
        reply = asgi_post(app, orjson.dumps(body))
        assert reply.status_code == 200
        assert reply.json()["response"]["allowed"] is True
    for operation in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        asgi_post(app, orjson.dumps(review(operation=operation)))
    series = _series(registry, "kgm_admission_requests_total")
    assert {s["operation"] for s in series} <= OPERATIONS
    assert {s["outcome"] for s in series} <= OUTCOMES
    assert (
        registry.get_sample_value(
            "kgm_admission_requests_total", {"operation": "other", "outcome": "unchanged"}
        )
        == 300
    )
    assert len(series) <= len(OPERATIONS) * len(OUTCOMES)


# -- reinvocation ----------------------------------------------------------------------------------------


def test_a_later_webhook_resetting_the_scheduler_gets_it_routed_again(demo_offer: Offer) -> None:
    p = pod(gpus(1), annotations={MEM: "10"})
    once = apply(p, judge(p, demo_offer))
    assert once["spec"]["schedulerName"] == "kgm-scheduler"
    once["spec"]["schedulerName"] = "default-scheduler"  # what another mutating webhook did
    again = judge(once, demo_offer)
    assert again == Admit(patch=[{"op": "add", "path": "/spec/schedulerName", "value": "kgm-scheduler"}])
    twice = apply(once, again)
    assert twice["metadata"]["annotations"] == once["metadata"]["annotations"]  # original-request kept
    assert judge(twice, demo_offer) == Admit()


def test_a_later_webhook_removing_the_scheduler_gets_it_routed_again(demo_offer: Offer) -> None:
    p = pod(gpus(1), annotations={MEM: "10"})
    once = apply(p, judge(p, demo_offer))
    del once["spec"]["schedulerName"]
    assert apply(once, judge(once, demo_offer))["spec"]["schedulerName"] == "kgm-scheduler"


def test_a_scheduler_chosen_after_us_is_respected(demo_offer: Offer) -> None:
    p = pod(gpus(1), annotations={MEM: "10"})
    once = apply(p, judge(p, demo_offer))
    once["spec"]["schedulerName"] = "volcano"
    again = apply(once, judge(once, demo_offer))
    assert again["spec"]["schedulerName"] == "volcano"
    assert judge(again, demo_offer) == Admit()
