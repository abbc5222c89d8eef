"""The two databases the SQL ledger runs on, SQLite and PostgreSQL: how to connect to each, its column
types and how it writes a time or an amount (a :class:`Dialect`), which one a ledger URL names, and the
URL fit for a log line. With ``inventory.ledger.sql``, the only modules that touch ``sqlite3`` or
``psycopg``; this one alone imports them (psycopg on first use: it is the ``[postgres]`` extra).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

#: The SQLite library this Python links (for reports; 3.24+ is needed for ON CONFLICT).
SQLITE_VERSION = sqlite3.sqlite_version


class Cursor(Protocol):
    """What this module uses of a DB-API cursor; ``sqlite3`` and ``psycopg`` cursors both have it."""

    @property
    def rowcount(self) -> int: ...
    def execute(self, sql: str, params: Sequence[Any] = (), /) -> object: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> object: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the ledger takes timezone-aware datetimes, not {moment!r}")
    return moment


def iso_utc(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00): comparing the text compares the times.
    return aware(moment).astimezone(UTC).isoformat(timespec="microseconds")


def time_out(value: datetime | str) -> datetime:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value)).astimezone(UTC)


def connect_sqlite(path: str) -> sqlite3.Connection:
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
class Dialect:
    name: str
    #: The driver's placeholder, replacing ``?`` in our SQL.
    param: str
    #: Column types substituted into migrations.
    types: dict[str, str]
    #: How a datetime and an amount are written (read back by ``time_out`` and ``Decimal``).
    time_in: Callable[[datetime], object]
    money_in: Callable[[Decimal], object]
    errors: type[Exception]
    #: Opens a connection to what the URL names (a path, or a libpq conninfo).
    connect: Callable[[str], Any]
    #: Statement opening a writing transaction (SQLite takes the write lock up front); None: implicit.
    begin_write: str | None
    begin_read: str | None
    #: Opens a read-only transaction that sees one moment of the whole ledger (a backup's snapshot).
    begin_snapshot: str
    #: Run first when a restore replaces the table, so that writers wait for it; None: the begin did it.
    table_lock: str | None
    #: Run first in the migration transaction so that two processes opening at once take turns.
    migration_lock: str | None

    def sql(self, text: str) -> str:
        return text.replace("?", self.param)


SQLITE = Dialect(
    name="sqlite", param="?", types={"money": "TEXT", "time": "TEXT", "bool": "INTEGER"},
    time_in=iso_utc, money_in=str, errors=sqlite3.Error, connect=connect_sqlite,
    begin_write="BEGIN IMMEDIATE", begin_read="BEGIN", migration_lock=None,
    # In WAL mode a read transaction reads the moment of its first SELECT until it ends.
    begin_snapshot="BEGIN", table_lock=None,
)  # fmt: skip


def postgresql() -> Dialect:
    """The PostgreSQL dialect, built on first use: psycopg is an extra (``[postgres]``), so that a
    SQLite install neither needs nor loads it."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError as error:
        raise ValueError(
            "a postgresql:// ledger needs psycopg: pip install 'k8s-gpu-management[postgres]'"
        ) from error
    return Dialect(
        name="postgresql", param="%s", types={"money": "NUMERIC", "time": "TIMESTAMPTZ", "bool": "BOOLEAN"},
        time_in=aware, money_in=lambda amount: amount, errors=psycopg.Error,
        connect=lambda conninfo: psycopg.connect(conninfo, autocommit=False),
        begin_write=None, begin_read=None, migration_lock="SELECT pg_advisory_xact_lock(7460401)",
        # What pg_dump does: one REPEATABLE READ snapshot; READ ONLY, so it never waits on a writer.
        begin_snapshot="SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        table_lock="LOCK TABLE allocations IN EXCLUSIVE MODE",
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


def parse_url(url: str) -> tuple[Dialect, str]:
    """The dialect and what its driver connects to: a SQLite path (or ``:memory:``), or a conninfo."""
    if url.startswith(("postgresql://", "postgres://")):
        return postgresql(), url
    if url.startswith("sqlite:///"):
        return SQLITE, url.removeprefix("sqlite:///")
    if not url or re.match(r"[A-Za-z][\w+.-]+:", url):  # another scheme; ":memory:" has none
        raise ValueError(f"not a ledger URL (sqlite:///PATH, a path, or postgresql://...): {redact(url)}")
    return SQLITE, url


def connect_sqlite_file(path: str, *, writable: bool) -> sqlite3.Connection:
    """A SQLite file as it is (a backup): opened, never created, read-only unless ``writable``."""
    uri = f"{Path(path).absolute().as_uri()}?mode={'rw' if writable else 'ro'}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


def online_backup(source: sqlite3.Connection, path: str) -> None:
    """Copy the database of ``source`` into a new file at ``path`` with SQLite's online backup API, in
    one step (every page under one read lock): one moment of the database, while other connections
    write. The copy is left in rollback-journal mode, a file that stands alone (no -wal beside it)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as copy:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
