"""The allocation ledger's contract: every GPU allocation, from its start to its end, exactly once.

What is stored is ``inventory.domain.allocation.Allocation``. Implementations:
``inventory.ledger.sql.SqlLedger`` over SQLite (a file, or ``:memory:`` for tests and the simulation)
and PostgreSQL (psycopg 3), one schema with versioned migrations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from inventory.domain.allocation import Allocation, AllocationFilter, Page, Status


class LedgerError(Exception):
    """The ledger's store failed (the database is away, a constraint broke)."""


class LedgerNotEmpty(LedgerError):  # noqa: N818  (a LedgerError, named for what it found)
    """A restore found allocations in the ledger it was to fill, and was not told to replace them."""

    def __init__(self, *, rows: int, open_rows: int, newest_start: datetime | None) -> None:
        self.rows, self.open_rows, self.newest_start = rows, open_rows, newest_start
        newest = "" if newest_start is None else f", the newest started {newest_start.isoformat()}"
        super().__init__(
            f"the target ledger is not empty: it holds {rows} allocations ({open_rows} reserved or active"
            f"{newest}); restoring with --force deletes them and writes the backup's"
        )


class Ledger(Protocol):
    """Thread-safe. Every method raises :class:`LedgerError` when the store fails."""

    def record_start(self, allocation: Allocation) -> bool:
        """Insert the allocation unless one with its id exists; whether it was inserted."""
        ...

    def record_end(
        self, allocation_id: str, end: datetime, *, inferred: bool = False, status: Status = Status.RELEASED
    ) -> bool:
        """Close an open allocation; False if it is unknown or already closed (idempotent)."""
        ...

    def end_reservation(
        self, reservation_id: str, end: datetime, *, status: Status = Status.RELEASED
    ) -> bool:
        """End a reservation no pod has claimed, in one step: False if the row is not ``reserved`` (unknown,
        ended, or claimed, even a moment ago), and then nothing changes."""
        ...

    def record_reservation(self, reservation: Allocation) -> bool:
        """Insert a reservation (status ``reserved``) unless its namespace and pod already have an open
        one (or its id exists); whether it was inserted. Checked and written in one statement."""
        ...

    def claim(
        self, reservation_id: str, *, namespace: str, pod: str, pod_uid: str, resource: str, start: datetime
    ) -> bool:
        """Turn a reservation into the active allocation of the pod that claimed it: only a row still
        ``reserved``, of that namespace and resource, and of that pod where the reservation names one,
        matched in the write itself. False (and nothing changes) otherwise."""
        ...

    def get(self, allocation_id: str) -> Allocation | None: ...

    def open_allocations(self) -> list[Allocation]:
        """Every reserved or active allocation (what a resync compares with the cluster)."""
        ...

    def find(self, where: AllocationFilter, *, limit: int = 100, cursor: str | None = None) -> Page:
        """Allocations matching ``where``, newest first, a page at a time."""
        ...

    def overlapping(self, start: datetime, end: datetime) -> Iterator[Allocation]:
        """Allocations that were open at some moment in [start, end) (cost analysis)."""
        ...

    def record_many(self, starts: Sequence[Allocation], ends: Sequence[tuple[str, datetime, bool]]) -> None:
        """A batch in one transaction (resync): inserts skip existing ids, ends skip closed rows."""
        ...

    def close(self) -> None: ...
