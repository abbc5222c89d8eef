"""Warnings for a MIG instance smaller than the memory asked for, and unknown placement policies refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import jsonpatch
import pytest

from extender.prioritize import POLICIES
from inventory.domain.allocation import Allocation, Status
from inventory.domain.demand import PLACEMENT_POLICIES
from inventory.domain.offer import Offer
from tests.support.data import K8S_FIXTURES
from tests.webhook.pods import apply, container, gpus, pod
from webhook.advice import MAX_WARNING_CHARS, brief, mig_memory_gb
from webhook.mutation import Admit, Deny, mutate_pod
from webhook.settings import WebhookSettings

SETTINGS = WebhookSettings()
MEM, POLICY = "gpu.kgm.io/memory-gb", "gpu.kgm.io/placement-policy"


def decide(p: dict[str, Any], offer: Offer, **options: Any) -> Admit | Deny:
    return mutate_pod(p, namespace="ml", offer=offer, settings=SETTINGS, **options)


@pytest.mark.parametrize(
    ("limits", "memory", "expected"),
    [
        pytest.param(
            {"nvidia.com/mig-1g.10gb": "1"},
            "30",
            ["kgm: nvidia.com/mig-1g.10gb has 10 GB, less than the 30 GB of gpu.kgm.io/memory-gb"],
            id="1g.10gb for 30 GB",
        ),
        pytest.param(
            {"nvidia.com/mig-3g.40gb": "1"},
            "40.5",
            ["kgm: nvidia.com/mig-3g.40gb has 40 GB, less than the 40.5 GB of gpu.kgm.io/memory-gb"],
            id="a fraction over",
        ),
        pytest.param({"nvidia.com/mig-3g.40gb": "1"}, "40", [], id="exactly its size"),
        pytest.param({"nvidia.com/mig-3g.40gb": "1"}, "10", [], id="larger than asked"),
        pytest.param({"nvidia.com/gpu": "1"}, "30", [], id="kgm picks the instance itself"),
    ],
)
def test_an_explicit_mig_profile_smaller_than_memory_gb_is_admitted_with_a_warning(
    limits: dict[str, str], memory: str, expected: list[str], demo_offer: Offer
) -> None:
    decision = decide(pod(container("cuda", limits), annotations={MEM: memory}), demo_offer)
    assert isinstance(decision, Admit)
    assert [w for w in decision.warnings if "less than" in w] == expected


def test_a_warning_is_given_once_per_resource_not_per_container(demo_offer: Offer) -> None:
    small = {"nvidia.com/mig-1g.10gb": "1"}
    p = pod(*(container(f"c{i}", small) for i in range(50)), annotations={MEM: "30"})
    decision = decide(p, demo_offer)
    assert isinstance(decision, Admit)
    assert len([w for w in decision.warnings if "less than" in w]) == 1


def test_a_claimed_reservation_smaller_than_memory_gb_gets_the_warning(demo_offer: Offer) -> None:
    held = Allocation(
        id="res-1", namespace="ml", pod="", pod_uid=None, node="gpu-h100-01",
        resource="nvidia.com/mig-1g.10gb", count=1, gpu_model="H100-80GB", hourly_price=Decimal("0.5"),
        status=Status.RESERVED, start=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    p = pod(gpus(1), annotations={MEM: "30", "gpu.kgm.io/allocation-id": "res-1"})
    decision = decide(p, demo_offer, reservation=lambda allocation_id: held)
    assert isinstance(decision, Admit)
    assert "kgm: nvidia.com/mig-1g.10gb has 10 GB, less than the 30 GB of gpu.kgm.io/memory-gb" in (
        decision.warnings
    )


def test_every_warning_fits_the_api_servers_120_characters(demo_offer: Offer) -> None:
    name = "c" * 63  # the longest container name Kubernetes allows
    p = pod(container(name, {"nvidia.com/gpu": "1"}), annotations={MEM: "10"})
    decision = decide(p, demo_offer)
    assert isinstance(decision, Admit)
    assert decision.warnings
    assert all(len(w) <= MAX_WARNING_CHARS for w in decision.warnings)
    assert decision.warnings[0].startswith(f"kgm: container {name} moved from nvidia.com/gpu")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("short", "short"), ("x" * 120, "x" * 120), ("x" * 121, "x" * 119 + "…"), ("y" * 5000, "y" * 119 + "…")],
)
def test_brief_cuts_to_120_characters(text: str, expected: str) -> None:
    assert brief(text) == expected


@pytest.mark.parametrize(
    ("resource", "memory"),
    [
        ("nvidia.com/mig-1g.10gb", 10),
        ("nvidia.com/mig-1g.10gb+me", 10),
        ("nvidia.com/mig-4g.71gb", 71),
        ("nvidia.com/mig-7g.141gb", 141),
        ("nvidia.com/gpu", None),
        ("example.com/mig-1g.10gb", None),
    ],
)
def test_a_mig_resource_names_its_memory(resource: str, memory: int | None) -> None:
    assert mig_memory_gb(resource) == memory


def test_admission_and_the_extender_know_the_same_placement_policies() -> None:
    assert tuple(POLICIES) == PLACEMENT_POLICIES


@pytest.mark.parametrize("policy", PLACEMENT_POLICIES)
def test_a_known_placement_policy_is_admitted(policy: str, demo_offer: Offer) -> None:
    assert isinstance(decide(pod(gpus(1), annotations={POLICY: policy}), demo_offer), Admit)


@pytest.mark.parametrize("policy", ["best", "Binpack", " spread", "", "x" * 5000])
def test_an_unknown_placement_policy_is_refused_naming_the_allowed_ones(
    policy: str, demo_offer: Offer
) -> None:
    decision = decide(pod(gpus(1), annotations={POLICY: policy}), demo_offer)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.reason) == (422, "Invalid")
    assert decision.message.startswith(f"{POLICY}={policy[:63]!r} is not a placement policy")
    assert decision.message.endswith("allowed: fragmentation, binpack, spread, cost")
    assert len(decision.message) < 200


def test_an_unknown_policy_in_a_copy_of_a_mutated_pod_is_refused(demo_offer: Offer) -> None:
    p = pod(gpus(1), annotations={MEM: "10"})
    mutated = apply(p, decide(p, demo_offer))
    mutated["metadata"]["annotations"][POLICY] = "nearest"
    assert isinstance(decide(mutated, demo_offer), Deny)


def test_a_pod_without_gpus_may_carry_any_policy(demo_offer: Offer) -> None:
    p = pod(container("web", {"cpu": "1"}), annotations={POLICY: "nearest"})
    assert decide(p, demo_offer) == Admit()


# Over HTTPS, through the production app: what kubectl gets.


def review_of(p: dict[str, Any]) -> dict[str, Any]:
    review: dict[str, Any] = json.loads((K8S_FIXTURES / "admissionreview-pod-create.json").read_text())
    review["request"]["object"] = p
    review["request"]["namespace"] = "ml"
    return review


def post(client: httpx.Client, review: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/mutate?timeout=10s", content=json.dumps(review))
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def test_over_https_an_unknown_policy_is_a_422_denial(client: httpx.Client) -> None:
    response = post(client, review_of(pod(gpus(1), annotations={POLICY: "nearest"})))
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 422,
        "reason": "Invalid",
        "message": "gpu.kgm.io/placement-policy='nearest' is not a placement policy; "
        "allowed: fragmentation, binpack, spread, cost",
    }


def test_over_https_a_small_profile_is_allowed_with_the_warning(client: httpx.Client) -> None:
    p = pod(container("cuda", {"nvidia.com/mig-1g.10gb": "1"}), annotations={MEM: "30"})
    response = post(client, review_of(p))
    assert response["allowed"] is True
    assert response["warnings"] == [
        "kgm: nvidia.com/mig-1g.10gb has 10 GB, less than the 30 GB of gpu.kgm.io/memory-gb"
    ]


def test_over_https_an_edited_copy_keeps_its_first_ask(client: httpx.Client) -> None:
    p = pod(gpus(1), annotations={MEM: "10"})
    first = post(client, review_of(p))
    mutated = jsonpatch.apply_patch(p, json.loads(base64.b64decode(first["patch"])))
    mutated["metadata"]["annotations"][MEM] = "30"
    second = post(client, review_of(mutated))
    copy = jsonpatch.apply_patch(mutated, json.loads(base64.b64decode(second["patch"])))
    assert copy["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert json.loads(copy["metadata"]["annotations"]["gpu.kgm.io/original-request"]) == {
        "containers": {"cuda": {"nvidia.com/gpu": "1"}}
    }
    assert second["warnings"] == [
        "kgm: container cuda moved from nvidia.com/mig-1g.10gb to nvidia.com/mig-3g.40gb"
    ]
