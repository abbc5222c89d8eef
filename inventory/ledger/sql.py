"""The ledger in SQL: :class:`SqlLedger` over SQLite (a file or ``:memory:``) and PostgreSQL (psycopg 3).
Its statements and migrations are in ``inventory.ledger.schema``.

One schema for both, versioned: :data:`MIGRATIONS` are applied in order at open, each in the
transaction that records it in ``schema_version``, so a second open applies nothing. The SQL is the
same on both; what differs (placeholders, column types, how a time or an amount is written) is in
a :class:`Dialect`. Times are written as ISO-8601 UTC text on SQLite (fixed width, so text order is
time order) and TIMESTAMPTZ on PostgreSQL; amounts as TEXT on SQLite and NUMERIC on PostgreSQL, so a
``Decimal`` comes back exactly as it went in.

This module and ``inventory.ledger.dialects`` (which imports the drivers) are the only ones that touch
``sqlite3`` or ``psycopg``: every driver exception becomes
:class:`~inventory.domain.allocation.LedgerError` here, chained. One connection per ledger behind a lock: the
ledger's writes are small and serial (one reconciler), and one connection is simple and correct.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Self

from inventory.domain.allocation import OPEN_STATUSES, Allocation, AllocationFilter, Page, Status
from inventory.ledger.dialects import (
    SQLITE,
    SQLITE_VERSION,
    Cursor,
    Dialect,
    connect_sqlite_file,
    online_backup,
    parse_url,
    redact,
    time_out,
)
from inventory.ledger.pages import decode_cursor, encode_cursor
from inventory.ledger.schema import (
    BACKUP_STATEMENTS,
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    SELECT,
    STATEMENTS,
)
from inventory.ledger.store import LedgerError, LedgerNotEmpty

log = logging.getLogger(__name__)

__all__ = ["MAX_AMOUNT", "SQLITE_VERSION", "SqlLedger", "redact"]  # what others import from here

Clock = Callable[[], datetime]

_OVERLAPPING_BATCH = 1000
#: Rows per read while a backup streams the table, and per write while a restore fills it.
_BACKUP_BATCH = 1000


#: Amounts are at least 0 and under this: an hourly price or a cost limit of more digits is a mistake,
#: and one the API could not round to cents for every answer that shows it.
MAX_AMOUNT = Decimal(10) ** 15


def _amount(amount: Decimal) -> Decimal:
    if not amount.is_finite() or not 0 <= amount < MAX_AMOUNT:
        raise ValueError(f"the ledger takes amounts from 0 to under {MAX_AMOUNT:,}, not {amount!r}")
    return amount


def _statements(migration: str, types: dict[str, str]) -> list[str]:
    return [s.strip() for s in migration.format(**types).split(";") if s.strip()]


class SqlLedger:
    """A :class:`~inventory.ledger.store.Ledger` in SQLite or PostgreSQL. Thread-safe; open with
    :meth:`open`."""

    def __init__(self, *, dialect: Dialect, target: str, clock: Clock) -> None:
        self._dialect = dialect
        self._target = target
        self._display = redact(target) if dialect.name == "postgresql" else f"sqlite:///{target}"
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._sql = {key: dialect.sql(text) for key, text in (STATEMENTS | BACKUP_STATEMENTS).items()}

    @classmethod
    def open(cls, url: str, *, clock: Clock = lambda: datetime.now(UTC), must_exist: bool = False) -> Self:
        """Connect to ``url``, bring its schema up to date, and return the ledger.

        ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``, a plain
        path or ``:memory:``; or ``postgresql://user:pass@host:port/db`` /
        ``postgresql:///db?host=/var/run/postgresql`` (a libpq URL). ``clock`` stamps applied
        migrations. ``must_exist``: a SQLite file that is not there raises :class:`LedgerError` instead
        of being created (a backup of a mistyped path). Raises ``ValueError`` for an unknown URL,
        :class:`LedgerError` when the store fails.
        """
        dialect, target = parse_url(url)
        if must_exist and dialect.name == "sqlite" and target != ":memory:" and not os.path.exists(target):
            raise LedgerError(f"no ledger at sqlite:///{target}")
        ledger = cls(dialect=dialect, target=target, clock=clock)
        try:
            ledger._migrate()
        except BaseException:
            ledger.close()
            raise
        log.info("ledger open: %s, schema version %d", ledger._display, MIGRATIONS[-1][0])
        return ledger

    def __repr__(self) -> str:
        return f"SqlLedger({self._display!r})"

    @property
    def database(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect.name

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; every later call raises :class:`LedgerError`. Closing twice is fine."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except self._dialect.errors as e:
                    log.warning("closing the ledger %s: %s", self._display, e)

    @contextmanager
    def _transaction(self, *, write: bool, snapshot: bool = False) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = None
            try:
                conn = self._connection()
                cursor = conn.cursor()
                begin = self._dialect.begin_write if write else self._dialect.begin_read
                begin = self._dialect.begin_snapshot if snapshot else begin
                if begin is not None:
                    cursor.execute(begin)
                yield cursor
                conn.commit()
            except self._dialect.errors as e:
                self._rollback(conn)
                raise LedgerError(f"ledger {self._display}: {type(e).__name__}: {e}".rstrip()) from e
            except BaseException:
                self._rollback(conn)
                raise

    def _connection(self) -> Any:
        if self._closed:
            raise LedgerError(f"ledger {self._display} is closed")
        # A PostgreSQL connection closes itself when the server goes away: reconnect on the next call.
        if self._conn is None or getattr(self._conn, "closed", False):
            if self._conn is not None:
                log.warning("ledger %s: connection lost, reconnecting", self._display)
            self._conn = self._dialect.connect(self._target)
        return self._conn

    def _rollback(self, conn: Any) -> None:
        if conn is not None:
            try:
                conn.rollback()
            except self._dialect.errors as e:
                log.warning("ledger %s: rollback failed: %s", self._display, e)

    def _migrate(self) -> None:
        types = self._dialect.types
        with self._transaction(write=True) as cursor:
            if self._dialect.migration_lock is not None:
                cursor.execute(self._dialect.migration_lock)
            cursor.execute(SCHEMA_VERSION_TABLE.format(**types))
            cursor.execute(self._sql["version"])
            current = cursor.fetchone()[0] or 0
            if current > MIGRATIONS[-1][0]:
                raise LedgerError(
                    f"ledger {self._display} has schema version {current}, newer than this code knows "
                    f"({MIGRATIONS[-1][0]}): upgrade the code, never downgrade the database"
                )
            for version, migration in MIGRATIONS:
                if version > current:
                    for statement in _statements(migration, types):
                        cursor.execute(statement)
                    cursor.execute(self._sql["add_version"], (version, self._dialect.time_in(self._clock())))
                    log.info("ledger %s: applied migration %d", self._display, version)

    def schema_version(self) -> int:
        """The highest migration applied to the store."""
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql["version"])
            return int(cursor.fetchone()[0] or 0)

    def _row(self, a: Allocation) -> tuple[object, ...]:
        time = self._dialect.time_in

        def money(amount: Decimal) -> object:
            return self._dialect.money_in(_amount(amount))

        return (
            a.id, a.namespace, a.pod, a.pod_uid, a.node, a.resource, a.count, a.gpu_model,
            money(a.hourly_price), str(a.status), time(a.start), None if a.end is None else time(a.end),
            a.end_inferred,
            json.dumps(list(a.device_ids)), a.team, a.user, a.workload_type,
            None if a.expires_at is None else time(a.expires_at), a.max_duration_hours,
            None if a.cost_limit is None else money(a.cost_limit), a.message,
        )  # fmt: skip

    def record_start(self, allocation: Allocation) -> bool:
        row = self._row(allocation)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["insert"], row)
            return cursor.rowcount == 1

    def _end_params(
        self, allocation_id: str, end: datetime, inferred: bool, status: Status
    ) -> tuple[object, ...]:
        if status in OPEN_STATUSES:
            raise ValueError(f"an allocation ends as released, expired or failed, not {status}")
        return (self._dialect.time_in(end), inferred, str(status), allocation_id)

    def record_end(
        self, allocation_id: str, end: datetime, *, inferred: bool = False, status: Status = Status.RELEASED
    ) -> bool:
        params = self._end_params(allocation_id, end, inferred, status)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["end"], params)
            return cursor.rowcount == 1

    def end_reservation(
        self, reservation_id: str, end: datetime, *, status: Status = Status.RELEASED
    ) -> bool:
        # The status is checked by the UPDATE itself: a claim committed since the caller's read is seen.
        params = self._end_params(reservation_id, end, False, status)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["end_reserved"], params)
            return cursor.rowcount == 1

    def record_reservation(self, reservation: Allocation) -> bool:
        if reservation.status is not Status.RESERVED:
            raise ValueError(f"a reservation is recorded as reserved, not {reservation.status}")
        row = self._row(reservation)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["insert_reservation"], row)
            return cursor.rowcount == 1

    def claim(
        self, reservation_id: str, *, namespace: str, pod: str, pod_uid: str, resource: str, start: datetime
    ) -> bool:
        params = (pod_uid, pod, self._dialect.time_in(start), reservation_id, namespace, resource, pod)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["claim"], params)
            return cursor.rowcount == 1

    def get(self, allocation_id: str) -> Allocation | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql["get"], (allocation_id,))
            row = cursor.fetchone()
        return None if row is None else _allocation(row)

    def open_allocations(self) -> list[Allocation]:
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql["open"])
            rows = cursor.fetchall()
        return [_allocation(row) for row in rows]

    def find(self, where: AllocationFilter, *, limit: int = 100, cursor: str | None = None) -> Page:
        """Newest first (start descending, then id). ``cursor`` is a page's ``next_cursor``; a cursor
        that is not one raises ``ValueError``. ``total`` counts every match, not only this page's."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        wanted = {column: getattr(where, column) for column in ("namespace", "team", "status", "node")}
        params: list[object] = [str(value) for value in wanted.values() if value is not None]
        condition = " AND ".join(f"{column} = ?" for column, v in wanted.items() if v is not None) or "1 = 1"
        page_condition, page_params = condition, list(params)
        if cursor is not None:
            start, last_id = decode_cursor(cursor)
            page_condition += ' AND ("start" < ? OR ("start" = ? AND id > ?))'
            page_params += [self._dialect.time_in(start), self._dialect.time_in(start), last_id]
        count_sql = self._dialect.sql(f"SELECT COUNT(*) FROM allocations WHERE {condition}")
        page_sql = self._dialect.sql(f'{SELECT} WHERE {page_condition} ORDER BY "start" DESC, id LIMIT ?')
        with self._transaction(write=False) as db:
            db.execute(count_sql, params)
            total = int(db.fetchone()[0])
            db.execute(page_sql, [*page_params, limit + 1])
            rows = db.fetchall()
        items = [_allocation(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, total=total, next_cursor=encode_cursor(items[-1]) if more else None)

    def overlapping(self, start: datetime, end: datetime) -> Iterator[Allocation]:
        """Oldest first, read in batches (each its own transaction, no lock held between batches), so
        a month of history is never all in memory at once."""
        window = (self._dialect.time_in(end), self._dialect.time_in(start))  # checked now, not at next()

        def batches() -> Iterator[Allocation]:
            after = (self._dialect.time_in(datetime.min.replace(tzinfo=UTC)), "")
            while True:
                with self._transaction(write=False) as cursor:
                    cursor.execute(self._sql["overlapping"], (*window, after[0], *after, _OVERLAPPING_BATCH))
                    rows = cursor.fetchall()
                yield from map(_allocation, rows)
                if len(rows) < _OVERLAPPING_BATCH:
                    return
                after = (rows[-1][COLUMNS.index("start")], rows[-1][0])

        return batches()

    def record_many(self, starts: Sequence[Allocation], ends: Sequence[tuple[str, datetime, bool]]) -> None:
        """Starts first, then ends, in one transaction: a failure anywhere leaves nothing of the batch."""
        with self._transaction(write=True) as cursor:
            cursor.executemany(self._sql["insert"], (self._row(a) for a in starts))
            if ends:
                end_rows = (self._end_params(i, end, inferred, Status.RELEASED) for i, end, inferred in ends)
                cursor.executemany(self._sql["end"], end_rows)

    # Backup and restore (the file formats are inventory.ledger.backup's): what needs the driver.

    @contextmanager
    def snapshot(self) -> Iterator[tuple[int, Iterator[Allocation]]]:
        """The schema version and every allocation by id, as of one moment, while writers carry on: one
        read-only transaction (``begin_snapshot``) read a batch at a time, so memory stays bounded. The
        ledger's lock is held until the block ends."""
        with self._transaction(write=False, snapshot=True) as cursor:
            cursor.execute(self._sql["version"])
            version = int(cursor.fetchone()[0] or 0)

            def rows() -> Iterator[Allocation]:
                after = ""
                while True:
                    cursor.execute(self._sql["page_by_id"], (after, _BACKUP_BATCH))
                    batch = cursor.fetchall()
                    yield from map(_allocation, batch)
                    if len(batch) < _BACKUP_BATCH:
                        return
                    after = batch[-1][0]

            yield version, rows()

    def replace_all(self, allocations: Iterable[Allocation], *, force: bool) -> int:
        """Make ``allocations`` the ledger's only rows, in one transaction: all of them, or nothing if
        anything fails (a row, or the caller's check raising while ``allocations`` is read). Raises
        :class:`LedgerNotEmpty` (and changes nothing) when the ledger has rows and not ``force``. Returns
        the number of rows written."""
        with self._transaction(write=True) as cursor:
            if self._dialect.table_lock is not None:
                cursor.execute(self._dialect.table_lock)
            cursor.execute(self._sql["summary"])
            rows, open_rows, newest = cursor.fetchone()
            if rows and not force:
                newest_start = None if newest is None else time_out(newest)
                raise LedgerNotEmpty(rows=int(rows), open_rows=int(open_rows), newest_start=newest_start)
            cursor.execute(self._sql["delete_all"])
            written, source = 0, iter(allocations)
            while batch := [self._row(a) for a in islice(source, _BACKUP_BATCH)]:
                cursor.executemany(self._sql["restore"], batch)
                written += len(batch)
            return written

    def backup_sqlite(self, path: str) -> None:
        """Copy this SQLite ledger into a new file at ``path`` (``dialects.online_backup``: one moment of
        the ledger, while other connections, the server's, write)."""
        if self._dialect.name != "sqlite":
            raise ValueError(f"{self._display} is not a SQLite ledger: back it up in the portable format")
        with self._lock:
            try:
                online_backup(self._connection(), path)
            except self._dialect.errors as e:
                raise LedgerError(f"backing up {self._display} to {path}: {type(e).__name__}: {e}") from e

    @classmethod
    def open_backup_file(cls, path: str, *, writable: bool = False) -> SqlLedger:
        """A SQLite backup file as a ledger to read (:meth:`snapshot`, :meth:`backup_header`), never
        migrated nor created; read-only unless ``writable`` (to add the header of a copy just made)."""
        dialect = dataclasses.replace(SQLITE, connect=lambda _: connect_sqlite_file(path, writable=writable))
        return cls(dialect=dialect, target=path, clock=lambda: datetime.now(UTC))

    def write_backup_header(self, header: str) -> None:
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql["create_header"])
            cursor.execute(self._sql["write_header"], (header,))

    def backup_header(self) -> str:
        """The header a SQLite backup file carries, once SQLite's own check of its pages passes."""
        with self._transaction(write=False) as cursor:
            cursor.execute("PRAGMA quick_check")
            problems = [str(row[0]) for row in cursor.fetchall()]
            if problems != ["ok"]:
                raise LedgerError(f"{self._display} is damaged: {'; '.join(problems[:3])}")
            cursor.execute(self._sql["read_header"])
            found = cursor.fetchone()
        if found is None:
            raise LedgerError(f"{self._display} has no backup header")
        return str(found[0])


def _allocation(row: Sequence[Any]) -> Allocation:
    (id_, namespace, pod, pod_uid, node, resource, count, gpu_model, price, status, start, end, inferred,
     devices, team, user, workload_type, expires_at, max_hours, cost_limit, message) = row  # fmt: skip
    return Allocation(
        id=id_, namespace=namespace, pod=pod, pod_uid=pod_uid, node=node, resource=resource, count=count,
        gpu_model=gpu_model, hourly_price=Decimal(price), status=Status(status), start=time_out(start),
        end=None if end is None else time_out(end), end_inferred=bool(inferred),
        device_ids=tuple(json.loads(devices)), team=team, user=user, workload_type=workload_type,
        expires_at=None if expires_at is None else time_out(expires_at), max_duration_hours=max_hours,
        cost_limit=None if cost_limit is None else Decimal(cost_limit), message=message,
    )  # fmt: skip
