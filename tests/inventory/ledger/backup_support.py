"""Ledgers for the backup tests: an empty one of either kind, and a small one to back up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inventory.domain.allocation import Allocation
from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.sql_support import FULL, RESERVATION, Store, alloc, sqlite_query
from tests.support import postgres

#: A ledger's rows in short: an active one, a released one with every field set, a reservation.
ROWS: tuple[Allocation, ...] = (alloc("a"), FULL, RESERVATION)


@contextmanager
def new_store(kind: str, directory: Path, name: str) -> Iterator[Store]:
    """Where a new, empty ledger of ``kind`` lives (skipped for PostgreSQL without a server)."""
    if kind == "sqlite":
        path = directory / f"{name}.db"
        yield Store("sqlite", f"sqlite:///{path}", lambda statement: sqlite_query(path, statement))
        return
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url:
        yield Store("postgresql", url, lambda statement: postgres.execute(url, statement))


def everything(ledger: SqlLedger) -> dict[str, Allocation]:
    with ledger.snapshot() as (_, allocations):
        return {a.id: a for a in allocations}
