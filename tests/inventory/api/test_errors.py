"""Failures in the error shape with the right status: 404, 405, 500 (leaking nothing), 503; metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from inventory.api import Role, TokenStore
from inventory.domain.allocation import Allocation, AllocationFilter, Page
from inventory.domain.snapshot import InventorySnapshot
from inventory.ledger.store import Ledger, LedgerError
from tests.inventory.api import ListLedger, harness


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/gpu/allocations", "GET, POST"),
        ("PATCH", "/api/v1/gpu/allocations/x", "DELETE, GET"),
        ("POST", "/api/v1/gpu/devices", "GET"),
        ("DELETE", "/api/v1/gpu/overview", "GET"),
        ("POST", "/api/v1/health", "GET"),
    ],
)
def test_a_method_a_path_does_not_take_gets_405_with_allow(
    ledger: Ledger, tokens: TokenStore, method: str, path: str, allow: str
) -> None:
    h = harness(ledger, tokens)
    reply = h.request(method, path, json={"namespace": "a", "podName": "p"})
    assert reply.status_code == 405
    assert reply.headers["allow"] == allow
    assert reply.json() == {"error": {"code": 405, "message": f"{method} is not supported here; use {allow}"}}
    assert h.reservations.requests == []


@pytest.mark.parametrize(
    "path", ["/api/v1/gpu/nothing", "/api/v1/", "/api/v1/gpu/allocations/a/b", "/api/v1/gpu/cost"]
)
def test_an_unknown_api_path_gets_404_in_the_error_shape(
    ledger: Ledger, tokens: TokenStore, path: str
) -> None:
    reply = harness(ledger, tokens).get(path)
    assert (reply.status_code, reply.json()) == (
        404,
        {"error": {"code": 404, "message": f"no such API path: {path}"}},
    )


def test_a_bug_gets_500_that_leaks_nothing_and_is_logged(
    ledger: Ledger, tokens: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> InventorySnapshot:
        raise RuntimeError("postgresql://kgm:hunter2@db/kgm exploded")

    h = harness(ledger, tokens, snapshot=broken, logger=logging.getLogger("tests.api.bug"))
    with caplog.at_level(logging.ERROR, logger="tests.api.bug"):
        reply = h.get("/api/v1/gpu/devices")
    assert reply.status_code == 500
    assert reply.json() == {"error": {"code": 500, "message": "internal error; the server's logs say more"}}
    assert "hunter2" not in reply.text
    assert [r.event for r in caplog.records] == ["api.error"]  # type: ignore[attr-defined]
    assert "hunter2" in caplog.text  # the operator reads the cause in the logs


class DownLedger(ListLedger):
    def find(self, where: AllocationFilter, *, limit: int = 100, cursor: str | None = None) -> Page:
        raise LedgerError("ledger sqlite:///x: OperationalError: disk I/O error")

    def overlapping(self, start: datetime, end: datetime) -> Iterator[Allocation]:
        raise LedgerError("ledger sqlite:///x: OperationalError: disk I/O error")


@pytest.mark.parametrize("path", ["/api/v1/gpu/allocations", "/api/v1/gpu/cost/analysis"])
def test_a_ledger_that_is_down_gets_503(tokens: TokenStore, path: str) -> None:
    reply = harness(DownLedger(), tokens).get(path)
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == "the allocation ledger is unavailable; try again later"
    assert "disk" not in reply.text


def test_requests_are_counted_by_route_method_and_status(ledger: Ledger, tokens: TokenStore) -> None:
    h = harness(ledger, tokens)
    h.get("/api/v1/gpu/overview")
    h.get("/api/v1/gpu/overview", role=Role.USER)
    h.get("/api/v1/gpu/devices", role=Role.USER)
    h.get("/api/v1/gpu/allocations/nope")
    h.request("BREW", "/api/v1/gpu/overview")

    def count(route: str, status: str) -> float | None:
        labels = {"route": route, "method": "GET", "status": status}
        return h.registry.get_sample_value("kgm_api_requests_total", labels)

    assert count("/api/v1/gpu/overview", "200") == 2
    assert count("/api/v1/gpu/devices", "403") == 1
    assert count("/api/v1/gpu/allocations/{allocationId}", "404") == 1
    other = {"route": "/api/v1/gpu/overview", "method": "other", "status": "405"}
    assert h.registry.get_sample_value("kgm_api_requests_total", other) == 1
    latency = {"route": "/api/v1/gpu/overview"}
    assert h.registry.get_sample_value("kgm_api_request_duration_seconds_count", latency) == 3
