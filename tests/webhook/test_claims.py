"""Who may claim a reservation at admission: only the pod it is for (its namespace and name), named at
creation; an UPDATE may not add, change or remove a pod's ``gpu.kgm.io/allocation-id``."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.domain.offer import Offer
from tests.webhook.pods import gpus, pod
from webhook.admission import Outcome, answer
from webhook.review import AdmissionRequest
from webhook.settings import WebhookSettings

CLAIM = "gpu.kgm.io/allocation-id"
RESERVED = Allocation(
    id="r1", namespace="ml", pod="llm-serve", pod_uid=None, node="gpu-node-1", resource="nvidia.com/gpu",
    count=1, gpu_model="H100-80GB", hourly_price=Decimal("3.90"), status=Status.RESERVED,
    start=datetime(2026, 12, 1, tzinfo=UTC),
)  # fmt: skip


def claiming(name: str | None, allocation_id: str | None = "r1", namespace: str = "ml") -> dict[str, Any]:
    obj = pod(gpus(1), annotations={CLAIM: allocation_id} if allocation_id else None)
    obj["metadata"]["namespace"] = namespace
    if name is not None:
        obj["metadata"].pop("generateName", None)
        obj["metadata"]["name"] = name
    return obj


def review(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> AdmissionRequest:
    namespace = obj["metadata"]["namespace"]
    return AdmissionRequest(
        uid="u-1", kind="Pod", group="", operation=operation, namespace=namespace, sub_resource="",
        object=obj, dry_run=False, old_object=old,
    )  # fmt: skip


def lookup(allocation_id: str) -> Allocation | None:
    return RESERVED if allocation_id == "r1" else None


def message_of(body: bytes) -> tuple[bool, str]:
    response = json.loads(body)["response"]
    return response["allowed"], response.get("status", {}).get("message", "")


@pytest.mark.parametrize(
    ("obj", "allowed", "says"),
    [
        pytest.param(claiming("llm-serve"), True, "", id="the pod it is for"),
        pytest.param(claiming("intruder"), False, "reservation r1 is for pod ml/llm-serve", id="another pod"),
        pytest.param(claiming(None), False, "reservation r1 is for pod ml/llm-serve", id="generateName"),
        pytest.param(claiming("llm-serve", namespace="other"), False, "not an open reservation in",
                     id="another namespace"),
    ],
)  # fmt: skip
def test_a_create_claims_only_the_reservation_of_its_own_name(
    demo_offer: Offer, obj: dict[str, Any], allowed: bool, says: str
) -> None:
    got = answer(review("CREATE", obj), demo_offer, WebhookSettings(), lookup)
    assert message_of(got.body)[0] is allowed
    assert says in message_of(got.body)[1]
    if allowed:
        patch = json.loads(base64.b64decode(json.loads(got.body)["response"]["patch"]))
        assert any(op["path"] == "/spec/affinity" for op in patch)  # pinned to the reserved node


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(None, "r1", id="added"),
        pytest.param("r1", "r2", id="changed"),
        pytest.param("r1", None, id="removed"),
    ],
)
def test_an_update_may_not_change_the_claim(demo_offer: Offer, old: str | None, new: str | None) -> None:
    got = answer(
        review("UPDATE", claiming("llm-serve", new), claiming("llm-serve", old)),
        demo_offer,
        WebhookSettings(),
        lookup,
    )
    assert got.outcome is Outcome.DENIED
    allowed, says = message_of(got.body)
    assert not allowed and f"{CLAIM} is set when a pod is created" in says


@pytest.mark.parametrize("claim", ["r1", None])
def test_an_update_keeping_the_claim_is_allowed_unread(demo_offer: Offer, claim: str | None) -> None:
    def unread(allocation_id: str) -> Allocation | None:
        raise AssertionError("an unchanged claim needs no look-up (the reservation may be long gone)")

    new = claiming("llm-serve", claim)
    new["metadata"]["labels"] = {"changed": "yes"}
    got = answer(review("UPDATE", new, claiming("llm-serve", claim)), demo_offer, WebhookSettings(), unread)
    assert (got.outcome, message_of(got.body)[0]) == (Outcome.UNCHANGED, True)
