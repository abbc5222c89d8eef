"""``/api/v1/gpu/allocations``: list with filters and pages, get, reserve (POST), release (DELETE)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from inventory.api import Role, TokenStore
from inventory.domain.allocation import Status
from inventory.ledger.store import Ledger
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.api import (
    IDS,
    NOW,
    FakeReservations,
    assert_matches_spec,
    harness,
)

LIST = "/api/v1/gpu/allocations"
ONE = "/api/v1/gpu/allocations/{allocationId}"
BODY = {
    "namespace": "team-a",
    "podName": "llama3-finetune",
    "workloadType": "training",
    "requiredMemoryGb": 40,
    "useMig": True,
    "userId": "alice",
    "teamId": "ml-platform",
    "maxDurationHours": 24,
    "costLimit": 99.5,
}


def ids_of(reply: Any) -> list[str]:
    return [item["allocationId"] for item in reply.json()["data"]]


def test_an_allocation_is_shown_with_every_field_and_its_cost_so_far(
    ledger: Ledger, tokens: TokenStore
) -> None:
    reply = harness(ledger, tokens).get(f"{LIST}/{IDS['a4']}")
    assert reply.status_code == 200
    assert reply.json() == {
        "data": {
            "allocationId": IDS["a4"],
            "namespace": "inference",
            "podName": "pod-a4",
            "podUid": None,
            "nodeName": "node-b",
            "resource": "nvidia.com/gpu",
            "profile": "gpu",
            "count": 1,
            "gpuModel": "A100-80GB",
            "status": "reserved",
            "statusText": "Reserved",
            "startTime": "2025-06-02T11:00:00Z",
            "endTime": None,
            "endInferred": False,
            "deviceIds": [],
            "teamId": "data",
            "userId": None,
            "workloadType": None,
            "expiresAt": "2025-06-02T13:00:00Z",
            "maxDurationHours": 8,
            "costLimit": 50.0,
            "costPerHour": 2.4,
            "cost": 2.4,
            "message": None,
        }
    }
    assert_matches_spec(reply, ONE)


def test_a_mig_allocation_costs_its_share_of_the_gpu(ledger: Ledger, tokens: TokenStore) -> None:
    data = harness(ledger, tokens).get(f"{LIST}/{IDS['a2']}").json()["data"]
    assert (data["profile"], data["costPerHour"], data["cost"]) == ("mig-3g.40gb", 1.6714, 3.34)
    assert data["deviceIds"] == ["MIG-x"]


def test_the_list_is_newest_first_with_pagination(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get(LIST)
    assert reply.status_code == 200
    assert ids_of(reply) == [IDS[k] for k in ("a4", "a2", "a1", "a3", "a5")]
    assert reply.json()["pagination"] == {"total": 5, "limit": 100, "nextCursor": None}
    assert_matches_spec(reply, LIST)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("namespace=training", ["a2", "a1", "a5"]),
        ("team=ml", ["a2", "a1", "a5"]),
        ("status=released", ["a3", "a5"]),
        ("status=RESERVED", ["a4"]),
        ("nodeName=node-b", ["a4", "a3"]),
        ("namespace=training&status=active", ["a2", "a1"]),
        ("namespace=nobody", []),
        ("namespace=&team=", ["a4", "a2", "a1", "a3", "a5"]),  # blank: not set
    ],
)
def test_the_list_filters(ledger: Ledger, tokens: TokenStore, query: str, expected: list[str]) -> None:
    reply = harness(ledger, tokens).get(f"{LIST}?{query}")
    assert ids_of(reply) == [IDS[k] for k in expected]
    assert reply.json()["pagination"]["total"] == len(expected)


def test_pages_follow_next_cursor_to_the_end_without_gaps_or_repeats(
    ledger: Ledger, tokens: TokenStore
) -> None:
    h = harness(ledger, tokens)
    seen: list[str] = []
    pages = 0
    path = f"{LIST}?limit=2"
    while True:
        reply = h.get(path)
        assert reply.status_code == 200
        pagination = reply.json()["pagination"]
        assert (pagination["total"], pagination["limit"]) == (5, 2)
        seen += ids_of(reply)
        pages += 1
        if pagination["nextCursor"] is None:
            break
        path = f"{LIST}?limit=2&cursor={pagination['nextCursor']}"
    assert pages == 3
    assert seen == [IDS[k] for k in ("a4", "a2", "a1", "a3", "a5")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be a whole number from 1 to 500, not '0'"),
        ("limit=501", "limit must be a whole number from 1 to 500"),
        ("limit=-1", "limit must be a whole number from 1 to 500"),
        ("limit=ten", "limit must be a whole number from 1 to 500"),
        ("limit=1.5", "limit must be a whole number from 1 to 500"),
        ("status=running", "status must be one of reserved, active, released, expired, failed"),
        ("cursor=%21%21not-a-cursor", "cursor is not valid"),
        ("namespace=a&namespace=b", "query parameter namespace is given more than once"),
        ("team=&team=ml", "query parameter team is given more than once"),
    ],
)
def test_bad_list_parameters_get_400_naming_the_parameter(
    ledger: Ledger, tokens: TokenStore, query: str, message: str
) -> None:
    reply = harness(ledger, tokens).get(f"{LIST}?{query}")
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == 400
    assert message in reply.json()["error"]["message"]
    assert_matches_spec(reply, LIST)


def test_an_unknown_allocation_is_404(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get(f"{LIST}/no-such-id")
    assert (reply.status_code, reply.json()) == (
        404,
        {"error": {"code": 404, "message": "no allocation 'no-such-id'"}},
    )


def test_a_reservation_is_made_from_the_reference_body(ledger: Ledger, tokens: TokenStore) -> None:
    h = harness(ledger, tokens)
    reply = h.request("POST", LIST, role=Role.USER, json=BODY)
    assert reply.status_code == 201, reply.text
    data = reply.json()["data"]
    assert data == {
        "allocationId": data["allocationId"],
        "allocatedResource": "nvidia.com/mig-3g.40gb",
        "nodeName": "node-a",
        "costPerHour": 1.6714,
        "status": "reserved",
        "statusText": "Reserved",
    }
    assert reply.headers["location"] == f"{LIST}/{data['allocationId']}"
    assert_matches_spec(reply, LIST, "post")
    assert h.reservations.requests == [
        ReservationRequest(
            namespace="team-a",
            pod_name="llama3-finetune",
            workload_type="Training",
            required_memory_gb=Decimal("40"),
            use_mig=True,
            user_id="alice",
            team_id="ml-platform",
            max_duration_hours=24,
            cost_limit=Decimal("99.5"),
        )
    ]
    made = h.get(reply.headers["location"]).json()["data"]
    assert (made["status"], made["teamId"], made["startTime"]) == (
        "reserved",
        "ml-platform",
        "2025-06-02T12:00:00Z",
    )


def test_a_minimal_reservation_takes_the_defaults(ledger: Ledger, tokens: TokenStore) -> None:
    h = harness(ledger, tokens)
    assert h.request("POST", LIST, json={"namespace": "a", "podName": "p"}).status_code == 201
    assert h.reservations.requests == [
        ReservationRequest(namespace="a", pod_name="p", workload_type="Development")
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": None}, "namespace is required"),
        ({"namespace": ""}, "namespace is required"),
        ({"namespace": "Team_A"}, "namespace 'Team_A' is not a valid Kubernetes namespace name"),
        ({"namespace": "a" * 64}, "namespace"),
        ({"podName": 7}, "podName is required and must be a non-empty string"),
        ({"podName": "-bad"}, "podName '-bad' is not a valid Kubernetes pod name"),
        ({"workloadType": "Batch"}, "workloadType must be one of Training, Inference, Development"),
        ({"requiredMemoryGb": 0}, "requiredMemoryGb must be greater than 0"),
        ({"requiredMemoryGb": "40"}, "requiredMemoryGb must be a number"),
        ({"requiredMemoryGb": True}, "requiredMemoryGb must be a number"),
        ({"useMig": "yes"}, "useMig must be true, false or null"),
        ({"maxDurationHours": 0}, "maxDurationHours must be a whole number of hours, 1..168"),
        ({"maxDurationHours": 169}, "maxDurationHours"),
        ({"maxDurationHours": 1.5}, "maxDurationHours"),
        ({"maxDurationHours": True}, "maxDurationHours"),
        ({"costLimit": -5}, "costLimit must be greater than 0"),
        ({"teamId": "ml platform"}, "teamId 'ml platform' is not a valid Kubernetes label value"),
        ({"userId": ""}, "userId must be a non-empty string"),
        ({"userId": 7}, "userId must be a non-empty string"),
    ],
)
def test_a_bad_reservation_field_gets_400_naming_it(
    ledger: Ledger, tokens: TokenStore, change: dict[str, Any], message: str
) -> None:
    h = harness(ledger, tokens)
    reply = h.request("POST", LIST, json={**BODY, **change})
    assert reply.status_code == 400
    assert message in reply.json()["error"]["message"]
    assert h.reservations.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b"[1]", "must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_gets_400(
    ledger: Ledger, tokens: TokenStore, content: bytes, message: str
) -> None:
    reply = harness(ledger, tokens).request("POST", LIST, content=content)
    assert reply.status_code == 400
    assert message in reply.json()["error"]["message"]


def test_a_body_over_64_kib_gets_413(ledger: Ledger, tokens: TokenStore) -> None:
    h = harness(ledger, tokens)
    reply = h.request("POST", LIST, json={**BODY, "padding": "x" * 70_000})
    assert reply.status_code == 413
    assert reply.json()["error"] == {"code": 413, "message": "the body is larger than 65536 bytes"}
    assert h.reservations.requests == []


@pytest.mark.parametrize("status", [409, 422, 503])
def test_a_refused_reservation_answers_with_the_services_status(
    ledger: Ledger, tokens: TokenStore, status: int
) -> None:
    refusal = ReservationRefusedError("no node has a free 3g.40gb", status=status)
    reply = harness(ledger, tokens, reservations=FakeReservations(ledger, refusal=refusal)).request(
        "POST", LIST, json=BODY
    )
    assert (reply.status_code, reply.json()) == (
        status,
        {"error": {"code": status, "message": "no node has a free 3g.40gb"}},
    )


def test_release_ends_an_open_allocation_once(ledger: Ledger, tokens: TokenStore) -> None:
    h = harness(ledger, tokens)
    reply = h.request("DELETE", f"{LIST}/{IDS['a4']}", role=Role.OPERATOR)
    assert (reply.status_code, reply.json()) == (
        200,
        {"data": {"allocationId": IDS["a4"], "status": "released", "statusText": "Released"}},
    )
    assert_matches_spec(reply, ONE, "delete")
    released = h.get(f"{LIST}/{IDS['a4']}").json()["data"]
    assert (released["status"], released["endTime"]) == ("released", NOW.isoformat().replace("+00:00", "Z"))
    again = h.request("DELETE", f"{LIST}/{IDS['a4']}")
    assert (again.status_code, again.json()["error"]["message"]) == (404, f"no open allocation {IDS['a4']!r}")


@pytest.mark.parametrize("target", ["no-such-id", IDS["a3"]], ids=["unknown", "already released"])
def test_releasing_what_is_not_open_is_404(ledger: Ledger, tokens: TokenStore, target: str) -> None:
    h = harness(ledger, tokens)
    assert h.request("DELETE", f"{LIST}/{target}").status_code == 404
    assert ledger.get(IDS["a3"]) is not None
    assert ledger.get(IDS["a3"]).status is Status.RELEASED  # type: ignore[union-attr]
