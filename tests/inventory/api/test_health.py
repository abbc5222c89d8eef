"""GET /api/v1/health proves the ledger takes writes (what `kgm validate` reports as "ledger writable"):
an UPDATE that matches no allocation, so it changes nothing; a ledger that refuses it answers 503."""

from __future__ import annotations

from datetime import datetime

from inventory.api import TokenStore
from inventory.api.handlers import HEALTH_PROBE_ID
from inventory.domain.allocation import Status
from inventory.ledger.store import Ledger, LedgerError
from tests.inventory.api import ListLedger, allocation, assert_matches_spec, harness


def test_health_says_the_ledger_is_writable_without_a_token(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get("/api/v1/health", role=None)
    assert (reply.status_code, reply.json()) == (200, {"data": {"status": "ok", "ledger": "writable"}})
    assert_matches_spec(reply, "/api/v1/health")


def test_the_probe_changes_no_allocation(ledger: Ledger, tokens: TokenStore) -> None:
    held = allocation("held")
    assert ledger.record_start(held)
    before = ledger.open_allocations()

    for _ in range(3):
        assert harness(ledger, tokens).get("/api/v1/health", role=None).status_code == 200

    assert ledger.open_allocations() == before
    assert ledger.get(HEALTH_PROBE_ID) is None
    assert ledger.get(held.id) == held


class ReadOnlyLedger(ListLedger):
    def record_end(
        self, allocation_id: str, end: datetime, *, inferred: bool = False, status: Status = Status.RELEASED
    ) -> bool:
        raise LedgerError("ledger sqlite:///x: OperationalError: attempt to write a readonly database")


def test_a_ledger_that_refuses_writes_makes_health_503(tokens: TokenStore) -> None:
    reply = harness(ReadOnlyLedger(), tokens).get("/api/v1/health", role=None)
    assert reply.status_code == 503
    assert reply.json() == {
        "error": {"code": 503, "message": "the allocation ledger is unavailable; try again later"}
    }
    assert_matches_spec(reply, "/api/v1/health")
