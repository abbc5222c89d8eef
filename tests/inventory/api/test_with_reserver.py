"""The API over the real pieces: SqlLedger, the inventory cache and ``Reserver``, end to end."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from inventory.api import TokenStore
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import offer_of
from inventory.domain.prices import PriceTable
from inventory.ledger import sql
from inventory.ledger.sql import SqlLedger
from inventory.live.static import cache_of
from inventory.reservations.reserver import Reserver
from kgm.web.routes import build_api_routes
from tests.inventory.api import CLUSTER, NOW, FakeReservations, Harness, write_tokens

LIST = "/api/v1/gpu/allocations"
MIG_40GB = {
    "namespace": "serving",
    "podName": "llm-1",
    "requiredMemoryGb": 40,
    "useMig": True,
    "teamId": "ml",
}


@pytest.fixture()
def h(tmp_path: Path) -> Iterator[Harness]:
    cluster = parse_cluster(CLUSTER, builtin_catalogue())
    cache = cache_of(cluster)
    offer = offer_of(cluster)
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        reserver = Reserver(
            cache=cache, ledger=ledger, prices=PriceTable(), offer=lambda: offer, clock=lambda: NOW
        )
        registry = CollectorRegistry()
        routes = build_api_routes(
            ledger=ledger,
            snapshot=cache.snapshot,
            reservations=reserver,
            prices=PriceTable(),
            tokens=TokenStore.load(write_tokens(tmp_path / "tokens.yaml")),
            clock=lambda: NOW,
            registry=registry,
            logger=logging.getLogger("tests.api.e2e"),
        )
        # The harness's FakeReservations is unused here: the routes call the real Reserver.
        yield Harness(ledger, FakeReservations(ledger), registry, Starlette(routes=routes))


def mig_40gb(h: Harness) -> Any:
    return h.get("/api/v1/gpu/overview").json()["data"]["migInstances"]["byProfile"]["mig-3g.40gb"]


def test_a_reservation_holds_capacity_until_it_is_released(h: Harness) -> None:
    reply = h.request("POST", LIST, json=MIG_40GB)
    assert reply.status_code == 201, reply.text
    made = reply.json()["data"]
    assert {k: made[k] for k in ("allocatedResource", "nodeName", "status", "statusText")} == {
        "allocatedResource": "nvidia.com/mig-3g.40gb",
        "nodeName": "node-a",
        "status": "reserved",
        "statusText": "Reserved",
    }
    assert made["costPerHour"] == 1.6714  # 3.90 x 3/7
    assert mig_40gb(h) == {"total": 1, "allocated": 1, "available": 0}
    assert h.get("/api/v1/gpu/overview").json()["data"]["reservedAllocations"] == 1

    full = h.request("POST", LIST, json={**MIG_40GB, "podName": "llm-2"})
    assert (full.status_code, full.json()["error"]["code"]) == (409, 409)

    shown = h.get(f"{LIST}/{made['allocationId']}").json()["data"]
    assert (shown["status"], shown["teamId"], shown["expiresAt"]) == (
        "reserved",
        "ml",
        "2025-06-03T12:00:00Z",
    )

    released = h.request("DELETE", f"{LIST}/{made['allocationId']}")
    assert released.json() == {
        "data": {"allocationId": made["allocationId"], "status": "released", "statusText": "Released"}
    }
    assert mig_40gb(h) == {"total": 1, "allocated": 0, "available": 1}
    assert h.get(f"{LIST}?status=released").json()["pagination"]["total"] == 1


def test_the_reservers_own_refusals_keep_their_status(h: Harness) -> None:
    reply = h.request("POST", LIST, json={"namespace": "a", "podName": "p", "requiredMemoryGb": 500})
    assert reply.status_code == 400
    assert "requiredMemoryGb 500 is more than any GPU here" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param({"costLimit": 1e26}, "costLimit must be", id="a cost limit no ledger can show"),
        pytest.param({"requiredMemoryGb": 1e26}, "requiredMemoryGb must be", id="memory past any GPU"),
        pytest.param({"requiredMemoryGB": 40}, "unknown fields: requiredMemoryGB (requiredMemoryGb?)",
                     id="a mis-cased field"),
    ],
)  # fmt: skip
def test_out_of_range_numbers_and_unknown_fields_are_refused_and_listing_still_works(
    h: Harness, body: dict[str, Any], says: str
) -> None:
    reply = h.request("POST", LIST, json={"namespace": "ml", "podName": "p", **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"].startswith(says)
    assert h.get(LIST).status_code == 200


def test_amounts_already_in_the_ledger_past_any_bound_still_list(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows an older version let in (costLimit 1e26) must not turn GET /allocations into a 500 forever.
    made = h.request("POST", LIST, json=MIG_40GB).json()["data"]
    row = h.ledger.get(made["allocationId"])
    assert row is not None
    with monkeypatch.context() as older_version:
        older_version.setattr(sql, "MAX_AMOUNT", Decimal("1e30"))
        h.ledger.record_start(dataclasses.replace(row, id="old-row", pod="old", cost_limit=Decimal("1E+26")))
    reply = h.get(LIST)
    assert reply.status_code == 200, reply.text
    shown = {item["allocationId"]: item for item in reply.json()["data"]}
    assert shown["old-row"]["costLimit"] == 1e26


def test_a_second_reservation_for_the_same_pod_is_refused_until_the_first_ends(h: Harness) -> None:
    first = h.request("POST", LIST, json={"namespace": "ml", "podName": "train"})
    assert first.status_code == 201, first.text
    free = h.get("/api/v1/gpu/overview").json()["data"]["fullGpus"]["available"]
    again = h.request("POST", LIST, json={"namespace": "ml", "podName": "train", "useMig": True})
    assert (again.status_code, again.json()["error"]["message"]) == (
        409,
        "pod ml/train already has a reservation: release it first",
    )
    assert h.get("/api/v1/gpu/overview").json()["data"]["fullGpus"]["available"] == free  # no hold left
    assert h.request("POST", LIST, json={"namespace": "other", "podName": "train"}).status_code == 201
    h.request("DELETE", f"{LIST}/{first.json()['data']['allocationId']}")
    assert h.request("POST", LIST, json={"namespace": "ml", "podName": "train"}).status_code == 201
