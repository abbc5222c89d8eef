"""The ledger in SQL: :class:`SqlLedger` over SQLite (a file or ``:memory:``) and PostgreSQL (psycopg 3).
Its statements and migrations are in ``inventory.ledger.schema``.

One schema for both, versioned: :data:`MIGRATIONS` are applied in order at open, each in the
transaction that records it in ``schema_version``, so a second open applies nothing. The SQL is the
same on both; what differs (placeholders, column types, how a time or an amount is written) is in
a :class:`_Dialect`. Times are written as ISO-8601 UTC text on SQLite (fixed width, so text order is
time order) and TIMESTAMPTZ on PostgreSQL; amounts as TEXT on SQLite and NUMERIC on PostgreSQL, so a
``Decimal`` comes back exactly as it went in.

This is the only module that imports ``sqlite3`` or ``psycopg``: every driver exception becomes
:class:`~inventory.domain.allocation.LedgerError` here, chained. One connection per ledger behind a lock: the
ledger's writes are small and serial (one reconciler), and one connection is simple and correct.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from inventory.domain.allocation import OPEN_STATUSES, Allocation, AllocationFilter, Page, Status
from inventory.ledger.pages import decode_cursor, encode_cursor
from inventory.ledger.schema import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    SELECT,
    STATEMENTS,
)
from inventory.ledger.store import LedgerError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_OVERLAPPING_BATCH = 1000
#: The SQLite library this Python links (for reports; 3.24+ is needed for ON CONFLICT).
SQLITE_VERSION = sqlite3.sqlite_version


class _Cursor(Protocol):
    """What this module uses of a DB-API cursor; ``sqlite3`` and ``psycopg`` cursors both have it."""

    @property
    def rowcount(self) -> int: ...
    def execute(self, sql: str, params: Sequence[Any] = (), /) -> object: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> object: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the ledger takes timezone-aware datetimes, not {moment!r}")
    return moment


#: Amounts are at least 0 and under this: an hourly price or a cost limit of more digits is a mistake,
#: and one the API could not round to cents for every answer that shows it.
MAX_AMOUNT = Decimal(10) ** 15


def _amount(amount: Decimal) -> Decimal:
    if not amount.is_finite() or not 0 <= amount < MAX_AMOUNT:
        raise ValueError(f"the ledger takes amounts from 0 to under {MAX_AMOUNT:,}, not {amount!r}")
    return amount


def _iso_utc(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00): comparing the text compares the times.
    return _aware(moment).astimezone(UTC).isoformat(timespec="microseconds")


def _time_out(value: datetime | str) -> datetime:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value)).astimezone(UTC)


def _connect_sqlite(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; _transaction issues BEGIN itself.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # ":memory:" stays "memory": nothing to share
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        conn.execute("PRAGMA busy_timeout = 5000")  # another process (a backup, sqlite3 CLI) holds the lock
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(frozen=True, slots=True)
class _Dialect:
    name: str
    #: The driver's placeholder, replacing ``?`` in our SQL.
    param: str
    #: Column types substituted into migrations.
    types: dict[str, str]
    #: How a datetime and an amount are written (read back by ``_time_out`` and ``Decimal``).
    time_in: Callable[[datetime], object]
    money_in: Callable[[Decimal], object]
    errors: type[Exception]
    #: Opens a connection to what the URL names (a path, or a libpq conninfo).
    connect: Callable[[str], Any]
    #: Statement opening a writing transaction (SQLite takes the write lock up front); None: implicit.
    begin_write: str | None
    begin_read: str | None
    #: Run first in the migration transaction so that two processes opening at once take turns.
    migration_lock: str | None

    def sql(self, text: str) -> str:
        return text.replace("?", self.param)


SQLITE = _Dialect(
    name="sqlite", param="?", types={"money": "TEXT", "time": "TEXT", "bool": "INTEGER"},
    time_in=_iso_utc, money_in=str, errors=sqlite3.Error, connect=_connect_sqlite,
    begin_write="BEGIN IMMEDIATE", begin_read="BEGIN", migration_lock=None,
)  # fmt: skip


def _postgresql() -> _Dialect:
    """The PostgreSQL dialect, built on first use: psycopg is an extra (``[postgres]``), so that a
    SQLite install neither needs nor loads it."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError as error:
        raise ValueError(
            "a postgresql:// ledger needs psycopg: pip install 'k8s-gpu-management[postgres]'"
        ) from error
    return _Dialect(
        name="postgresql", param="%s", types={"money": "NUMERIC", "time": "TIMESTAMPTZ", "bool": "BOOLEAN"},
        time_in=_aware, money_in=lambda amount: amount, errors=psycopg.Error,
        connect=lambda conninfo: psycopg.connect(conninfo, autocommit=False),
        begin_write=None, begin_read=None, migration_lock="SELECT pg_advisory_xact_lock(7460401)",
    )  # fmt: skip


def redact(url: str) -> str:
    """The URL fit for a log line: a password, in the user part or the query, becomes ``***``."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and all(key != "password" for key, _ in pairs):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    hidden = [(k, "***" if k == "password" else v) for k, v in pairs]
    query = urlencode(hidden, safe="/:*", quote_via=quote)  # libpq reads "+" as itself, not a space
    # Not urlunsplit: it drops the "//" of an empty host ("postgresql:///db?host=/run/postgresql").
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _parse_url(url: str) -> tuple[_Dialect, str]:
    """The dialect and what its driver connects to: a SQLite path (or ``:memory:``), or a conninfo."""
    if url.startswith(("postgresql://", "postgres://")):
        return _postgresql(), url
    if url.startswith("sqlite:///"):
        return SQLITE, url.removeprefix("sqlite:///")
    if not url or re.match(r"[A-Za-z][\w+.-]+:", url):  # another scheme; ":memory:" has none
        raise ValueError(f"not a ledger URL (sqlite:///PATH, a path, or postgresql://...): {redact(url)}")
    return SQLITE, url


def _statements(migration: str, types: dict[str, str]) -> list[str]:
    return [s.strip() for s in migration.format(**types).split(";") if s.strip()]


class SqlLedger:
    """A :class:`~inventory.ledger.store.Ledger` in SQLite or PostgreSQL. Thread-safe; open with
    :meth:`open`."""

    def __init__(self, *, dialect: _Dialect, target: str, clock: Clock) -> None:
        self._dialect = dialect
        self._target = target
        self._display = redact(target) if dialect.name == "postgresql" else f"sqlite:///{target}"
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._sql = {key: dialect.sql(text) for key, text in STATEMENTS.items()}

    @classmethod
    def open(cls, url: str, *, clock: Clock = lambda: datetime.now(UTC)) -> SqlLedger:
        """Connect to ``url``, bring its schema up to date, and return the ledger.

        ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``, a plain
        path or ``:memory:``; or ``postgresql://user:pass@host:port/db`` /
        ``postgresql:///db?host=/var/run/postgresql`` (a libpq URL). ``clock`` stamps applied
        migrations. Raises ``ValueError`` for an unknown URL, :class:`LedgerError` when the store fails.
        """
        dialect, target = _parse_url(url)
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
    def _transaction(self, *, write: bool) -> Iterator[_Cursor]:
        """A cursor inside one transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = None
            try:
                conn = self._connection()
                cursor = conn.cursor()
                begin = self._dialect.begin_write if write else self._dialect.begin_read
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


def _allocation(row: Sequence[Any]) -> Allocation:
    (id_, namespace, pod, pod_uid, node, resource, count, gpu_model, price, status, start, end, inferred,
     devices, team, user, workload_type, expires_at, max_hours, cost_limit, message) = row  # fmt: skip
    return Allocation(
        id=id_, namespace=namespace, pod=pod, pod_uid=pod_uid, node=node, resource=resource, count=count,
        gpu_model=gpu_model, hourly_price=Decimal(price), status=Status(status), start=_time_out(start),
        end=None if end is None else _time_out(end), end_inferred=bool(inferred),
        device_ids=tuple(json.loads(devices)), team=team, user=user, workload_type=workload_type,
        expires_at=None if expires_at is None else _time_out(expires_at), max_duration_hours=max_hours,
        cost_limit=None if cost_limit is None else Decimal(cost_limit), message=message,
    )  # fmt: skip

