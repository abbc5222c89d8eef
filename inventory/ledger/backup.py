"""Backup files of the ledger, and restoring one: ``kgm ledger backup`` and ``kgm ledger restore``.

Two formats, one content: the ``allocations`` table as of one moment, a header that says what it holds,
and a checksum over it.

- ``jsonl``, the portable one (any ledger, SQLite or PostgreSQL, into any): a first line, the header
  ``{"format": "kgm-ledger-backup", "version": 1, "schemaVersion": N, "createdAt": ..., "source":
  "sqlite"|"postgresql", "tables": {"allocations": ROWS}, "checksum": "sha256:HEX"}``, then one JSON
  object per row, ordered by id, its keys the table's columns (times ISO-8601 UTC with microseconds,
  amounts decimal strings, ``device_ids`` a list). The checksum is SHA-256 over the row lines' bytes,
  newlines included. Read in one ``snapshot`` of the ledger (a REPEATABLE READ, READ ONLY transaction
  on PostgreSQL): one moment, while the server writes.
- ``sqlite``, from a SQLite ledger only: SQLite's online backup API, a database file (openable with
  ``sqlite3``, usable as a ledger after ``restore``), with the same header in its table ``kgm_backup``;
  its checksum is over the rows written as the ``jsonl`` lines would be.

Restore reads either (by the file's first bytes) into either ledger, in one transaction: it refuses a
file of a newer schema than this code knows, a file whose rows do not match its header's counts and
checksum, and a ledger that has rows unless told to replace them (``force``); anything refused or
failing leaves the ledger as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from inventory.domain.allocation import Allocation, Status
from inventory.ledger.schema import COLUMNS, MIGRATIONS
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import LedgerError

FORMAT = "kgm-ledger-backup"
FORMAT_VERSION = 1
TABLE = "allocations"
SQLITE_MAGIC = b"SQLite format 3\x00"
#: A row is well under a kilobyte; a longer line is not one of ours, and is refused unread.
MAX_LINE = 1 << 20


class BackupFormat(StrEnum):
    JSONL = "jsonl"
    SQLITE = "sqlite"


EXTENSIONS = {BackupFormat.JSONL: ".jsonl", BackupFormat.SQLITE: ".sqlite"}
#: The names ``backup_name`` gives, the only files ``rotate`` may delete.
_BACKUP_NAME = re.compile(r"ledger-\d{8}T\d{6}Z\.(jsonl|sqlite)")


class BackupError(Exception):
    """A file that cannot be restored (not a backup, damaged, truncated, of a newer schema), or a backup
    that cannot be written where asked."""


@dataclass(frozen=True, slots=True)
class Header:
    schema_version: int
    created_at: datetime
    source: str
    #: Rows per table.
    tables: dict[str, int]
    #: ``sha256:`` and the hex digest of the row lines.
    checksum: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT, "version": FORMAT_VERSION, "schemaVersion": self.schema_version,
                "createdAt": _time(self.created_at), "source": self.source, "tables": self.tables,
                "checksum": self.checksum,
            }
        )  # fmt: skip

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> Header:
        """The header, checked: our format, a version this code reads, a schema it knows."""
        try:
            found = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise BackupError(f"{where} is not a kgm ledger backup (its header is not JSON)") from e
        if not isinstance(found, dict) or found.get("format") != FORMAT:
            raise BackupError(f"{where} is not a kgm ledger backup (no {FORMAT!r} header)")
        if found.get("version") != FORMAT_VERSION:
            raise BackupError(
                f"{where} is backup format {found.get('version')!r}; this kgm reads {FORMAT_VERSION}"
            )
        known = MIGRATIONS[-1][0]
        try:
            header = cls(
                schema_version=int(found["schemaVersion"]), created_at=_parse_time(found["createdAt"]),
                source=str(found["source"]), tables={str(k): int(v) for k, v in found["tables"].items()},
                checksum=str(found["checksum"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BackupError(f"{where}: a damaged header ({type(e).__name__}: {e})") from e
        if header.schema_version > known:
            raise BackupError(
                f"{where} holds ledger schema version {header.schema_version}, newer than this kgm knows "
                f"({known}): restore it with the kgm version that made it, or a newer one"
            )
        if set(header.tables) != {TABLE} or header.tables[TABLE] < 0:
            raise BackupError(f"{where}: the header names tables {sorted(header.tables)}, not [{TABLE!r}]")
        return header


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    format: BackupFormat
    header: Header
    bytes: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    format: BackupFormat
    header: Header
    rows: int


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"a time is a string, not {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a time with its offset, not {text!r}")
    return moment.astimezone(UTC)


def row_line(allocation: Allocation) -> bytes:
    """One row as a ``jsonl`` line: the same allocation is always the same bytes (the checksum's input)."""
    record: dict[str, Any] = {}
    for column in COLUMNS:
        value = getattr(allocation, column)
        if isinstance(value, datetime):
            value = _time(value)
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        record[column] = value
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


_TIMES = {"start", "end", "expires_at"}
_AMOUNTS = {"hourly_price", "cost_limit"}
_INTS = {"count", "max_duration_hours"}
_REQUIRED = {"id", "namespace", "pod", "resource", "count", "hourly_price", "status", "start"}


def _field(column: str, value: object) -> object:
    if value is None:
        if column in _REQUIRED:
            raise ValueError("null")
        return None
    if column in _TIMES:
        return _parse_time(value)
    if column in _AMOUNTS:
        try:
            amount = Decimal(value) if isinstance(value, str) and len(value) < 100 else Decimal("NaN")
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite():
            raise ValueError(f"a decimal string, not {value!r}")
        return amount
    if column in _INTS:
        if type(value) is not int:
            raise TypeError(f"an integer, not {value!r}")
        return value
    if column == "end_inferred":
        if type(value) is not bool:
            raise TypeError(f"true or false, not {value!r}")
        return value
    if column == "device_ids":
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            raise TypeError(f"a list of strings, not {value!r}")
        return tuple(value)
    if column == "status":
        return Status(str(value))
    if not isinstance(value, str):
        raise TypeError(f"a string, not {value!r}")
    return value


def _checked(column: str, value: object) -> object:
    try:
        return _field(column, value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{column}: {e}") from e


def parse_row(line: bytes, where: str) -> Allocation:
    """A ``jsonl`` row line as the allocation it holds; :class:`BackupError` naming ``where`` if not one."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict) or set(record) != set(COLUMNS):
            raise ValueError(f"not a row of {TABLE} (its keys are not the table's columns)")
        return Allocation(**{column: _checked(column, record[column]) for column in COLUMNS})  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError) as e:
        raise BackupError(f"{where}: {type(e).__name__}: {e}") from e


def backup_name(moment: datetime, backup_format: BackupFormat) -> str:
    """``ledger-YYYYMMDDTHHMMSSZ.jsonl`` (or ``.sqlite``): names that sort by time."""
    return f"ledger-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}{EXTENSIONS[backup_format]}"


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups that :func:`backup_name` named in ``directory``
    (nothing else there is touched); the deleted paths, oldest first."""
    if keep < 1:
        raise ValueError(f"keep at least 1 backup, not {keep}")
    ours = [p for p in directory.iterdir() if _BACKUP_NAME.fullmatch(p.name) and p.is_file()]
    ours.sort(key=lambda p: p.name.split(".")[0])  # the time in the name, whichever the format
    removed = ours[:-keep]
    for path in removed:
        path.unlink()
    return removed


def backup(
    ledger: SqlLedger,
    path: Path,
    *,
    backup_format: BackupFormat,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Write a backup of ``ledger`` to ``path``, a new file: written beside it under a hidden name and
    renamed into place once complete and synced, so that ``path`` is a whole backup or nothing."""
    if path.exists():
        raise BackupError(f"{path} exists: a backup never overwrites one (choose another name)")
    if not path.parent.is_dir():
        raise BackupError(f"{path.parent} is not a directory")
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)  # left by a backup that died
    began = clock()  # the header's createdAt: just before the snapshot's moment
    try:
        if backup_format is BackupFormat.SQLITE:
            header = _backup_sqlite(ledger, partial, began)
        else:
            header = _backup_jsonl(ledger, partial, began)
        os.replace(partial, path)
        _sync_directory(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(path=path, format=backup_format, header=header, bytes=path.stat().st_size)


def _header(version: int, source: str, rows: int, digest: Any, began: datetime) -> Header:
    return Header(
        schema_version=version, created_at=began, source=source, tables={TABLE: rows},
        checksum=f"sha256:{digest.hexdigest()}",
    )  # fmt: skip


def _backup_jsonl(ledger: SqlLedger, partial: Path, began: datetime) -> Header:
    # The header goes first but counts the rows: they are written to a scratch file beside, then after it.
    digest, rows = hashlib.sha256(), 0
    with tempfile.TemporaryFile(dir=partial.parent) as body:
        with ledger.snapshot() as (version, allocations):
            for allocation in allocations:
                line = row_line(allocation)
                digest.update(line)
                body.write(line)
                rows += 1
        header = _header(version, ledger.database, rows, digest, began)
        body.seek(0)
        with partial.open("wb") as out:
            out.write(header.to_json().encode() + b"\n")
            shutil.copyfileobj(body, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    return header


def _backup_sqlite(ledger: SqlLedger, partial: Path, began: datetime) -> Header:
    ledger.backup_sqlite(str(partial))
    with SqlLedger.open_backup_file(str(partial), writable=True) as copy:
        digest, rows = hashlib.sha256(), 0
        with copy.snapshot() as (version, allocations):
            for allocation in allocations:
                digest.update(row_line(allocation))
                rows += 1
        header = _header(version, ledger.database, rows, digest, began)
        copy.write_backup_header(header.to_json())
    with partial.open("rb+") as synced:
        os.fsync(synced.fileno())
    return header


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore(ledger: SqlLedger, path: Path, *, force: bool = False) -> RestoreResult:
    """Make the backup at ``path`` the ledger's content, in one transaction, verified as it is read:
    :class:`BackupError` (and the ledger unchanged) for a file that is not a whole backup this code
    can read; :class:`~inventory.ledger.store.LedgerNotEmpty` for a ledger with rows, unless ``force``."""
    try:
        with path.open("rb") as file:
            if file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                return _restore_sqlite(ledger, path, force=force)
            file.seek(0)
            return _restore_jsonl(ledger, file, str(path), force=force)
    except FileNotFoundError as e:
        raise BackupError(f"no backup at {path}") from e
    except ValueError as e:  # a row the ledger refuses to write (an amount out of its range, say)
        raise BackupError(f"{path}: a row the ledger refuses: {e}") from e


def _verified(rows: Iterator[tuple[Allocation, bytes]], header: Header, where: str) -> Iterator[Allocation]:
    """The allocations of ``rows`` (each with its line, the checksum's input) as they are read, then a
    check that they were the header's count and checksum: raised inside the restore's transaction, a
    mismatch rolls it all back."""
    expected, digest, count = header.tables[TABLE], hashlib.sha256(), 0
    for allocation, line in rows:
        count += 1
        if count > expected:
            raise BackupError(f"{where}: more rows than the {expected} its header counts")
        digest.update(line)
        yield allocation
    if count != expected:
        raise BackupError(f"{where} is truncated: {count} rows of the {expected} its header counts")
    if f"sha256:{digest.hexdigest()}" != header.checksum:
        raise BackupError(f"{where}: the rows do not match the header's checksum (the file was changed)")


def _restore_jsonl(ledger: SqlLedger, file: IO[bytes], where: str, *, force: bool) -> RestoreResult:
    header = Header.parse(_line(file, where, 1), where)

    def rows() -> Iterator[tuple[Allocation, bytes]]:
        number = 1
        while line := _line(file, where, number + 1):
            number += 1
            yield parse_row(line, f"{where}, line {number}"), line

    written = ledger.replace_all(_verified(rows(), header, where), force=force)
    return RestoreResult(format=BackupFormat.JSONL, header=header, rows=written)


def _line(file: IO[bytes], where: str, number: int) -> bytes:
    line = file.readline(MAX_LINE + 1)
    if line and not line.endswith(b"\n"):
        reason = "longer than a row can be" if len(line) > MAX_LINE else "cut short (the file is truncated)"
        raise BackupError(f"{where}, line {number}: {reason}")
    if not line and number == 1:
        raise BackupError(f"{where} is empty: not a kgm ledger backup")
    return line


def _restore_sqlite(ledger: SqlLedger, path: Path, *, force: bool) -> RestoreResult:
    where = str(path)
    with SqlLedger.open_backup_file(where) as backup_file:
        try:
            header = Header.parse(backup_file.backup_header(), where)
        except LedgerError as e:
            raise BackupError(f"{where} is not a whole kgm ledger backup: {e}") from e
        with backup_file.snapshot() as (version, allocations):
            if version != header.schema_version:
                raise BackupError(
                    f"{where}: schema version {version}, its header says {header.schema_version}"
                )
            pairs = ((allocation, row_line(allocation)) for allocation in allocations)
            rows = ledger.replace_all(_verified(pairs, header, where), force=force)
    return RestoreResult(format=BackupFormat.SQLITE, header=header, rows=rows)
