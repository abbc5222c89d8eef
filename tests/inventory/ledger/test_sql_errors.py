"""SQL ledger failures: every driver error and every call on a closed ledger is a ``LedgerError``, and a
PostgreSQL connection the server dropped is made again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import psycopg
import pytest

from inventory.domain.allocation import AllocationFilter
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import LedgerError
from tests.inventory.ledger.sql_support import RESERVATION, T0, H, Store, alloc
from tests.support import postgres

CALLS: dict[str, Callable[[SqlLedger], object]] = {
    "record_start": lambda ledger: ledger.record_start(alloc("a")),
    "record_end": lambda ledger: ledger.record_end("a", T0),
    "claim": lambda ledger: ledger.claim("a", namespace="n", pod="p", pod_uid="u", resource="r", start=T0),
    "record_reservation": lambda ledger: ledger.record_reservation(RESERVATION),
    "get": lambda ledger: ledger.get("a"),
    "open_allocations": lambda ledger: ledger.open_allocations(),
    "find": lambda ledger: ledger.find(AllocationFilter()),
    "overlapping": lambda ledger: list(ledger.overlapping(T0, T0 + H)),
    "record_many": lambda ledger: ledger.record_many([alloc("a")], [("b", T0, False)]),
    "schema_version": lambda ledger: ledger.schema_version(),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_driver_errors_become_ledger_errors(
    ledger: SqlLedger, store: Store, call: Callable[[SqlLedger], object]
) -> None:
    store.query("DROP TABLE allocations")
    store.query("DROP TABLE schema_version")
    with pytest.raises(LedgerError) as caught:
        call(ledger)
    assert isinstance(caught.value.__cause__, sqlite3.Error | psycopg.Error)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_closed_ledger_raises_ledger_error(ledger: SqlLedger, call: Callable[[SqlLedger], object]) -> None:
    ledger.close()
    ledger.close()  # closing twice is fine
    with pytest.raises(LedgerError, match="closed"):
        call(ledger)


def test_postgresql_reconnects_after_the_server_drops_the_connection() -> None:
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url, SqlLedger.open(url) as ledger:
        ledger.record_start(alloc("a"))
        killed = postgres.execute(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = current_setting('application_name') AND pid <> pg_backend_pid()",
        )
        assert killed == [(True,)]
        with pytest.raises(LedgerError):  # the call that finds the connection gone fails: the caller retries
            ledger.get(alloc("a").id)
        assert ledger.get(alloc("a").id) == alloc("a")
