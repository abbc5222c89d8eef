"""What a restore refuses, leaving the target ledger as it was: a file that is not a backup, a damaged,
truncated or altered one, one of a newer schema, and a ledger that has rows (unless forced); and what a
backup refuses: overwriting a file, the SQLite format of a PostgreSQL ledger."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inventory.ledger.backup import (
    EXTENSIONS,
    BackupError,
    BackupFormat,
    backup,
    parse_row,
    restore,
    row_line,
)
from inventory.ledger.schema import MIGRATIONS
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import LedgerError, LedgerNotEmpty
from tests.inventory.ledger.backup_support import ROWS, everything, new_store
from tests.inventory.ledger.sql_support import Store, alloc


def make_backup(directory: Path, backup_format: BackupFormat) -> Path:
    """A backup of :data:`ROWS`, made from a SQLite ledger."""
    with SqlLedger.open(f"sqlite:///{directory / 'made.db'}") as ledger:
        for row in ROWS:
            assert ledger.record_reservation(row) if row.status == "reserved" else ledger.record_start(row)
        path = directory / f"made{EXTENSIONS[backup_format]}"
        return backup(ledger, path, backup_format=backup_format).path


@pytest.fixture(params=list(BackupFormat))
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A backup of :data:`ROWS`, in each format."""
    return make_backup(tmp_path, BackupFormat(request.param))


@pytest.fixture()
def target(store: Store) -> Iterator[SqlLedger]:
    """The ledger restored into: holds one allocation that a refused restore must leave alone."""
    with SqlLedger.open(store.url) as ledger:
        assert ledger.record_start(alloc("already-here"))
        yield ledger


BEFORE = {alloc("already-here").id: alloc("already-here")}


def test_a_backup_restores_whole_into_an_empty_ledger_of_either_kind(made: Path, store: Store) -> None:
    with SqlLedger.open(store.url) as ledger:
        assert restore(ledger, made).rows == len(ROWS)
        assert everything(ledger) == {r.id: r for r in ROWS}


def test_a_ledger_with_rows_is_refused_saying_what_would_be_replaced(made: Path, target: SqlLedger) -> None:
    with pytest.raises(LedgerNotEmpty, match=r"holds 1 allocations \(1 reserved or active.*--force"):
        restore(target, made)
    assert everything(target) == BEFORE


def test_force_replaces_every_row_of_the_ledger(made: Path, target: SqlLedger) -> None:
    assert restore(target, made, force=True).rows == len(ROWS)
    assert everything(target) == {r.id: r for r in ROWS}


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _header_changed(path: Path, **fields: object) -> None:
    lines = _lines(path)
    header = json.loads(lines[0]) | fields
    path.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))


JSONL_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "cut mid-line": (lambda p: p.write_bytes(p.read_bytes()[:-7]), "cut short"),
    "last row missing": (lambda p: p.write_bytes(b"".join(_lines(p)[:-1])), "truncated: 2 rows of the 3"),
    "only the header": (lambda p: p.write_bytes(_lines(p)[0]), "truncated: 0 rows of the 3"),
    "a row altered": (
        lambda p: p.write_bytes(p.read_bytes().replace(b'"count":2', b'"count":3')),
        "do not match the header's checksum",
    ),
    "a row added": (lambda p: p.write_bytes(p.read_bytes() + _lines(p)[1]), "more rows than the 3"),
    "a newer schema": (
        lambda p: _header_changed(p, schemaVersion=MIGRATIONS[-1][0] + 1),
        "newer than this kgm knows",
    ),
    "a newer format": (lambda p: _header_changed(p, version=2), "backup format 2; this kgm reads 1"),
    "no checksum": (lambda p: _header_changed(p, checksum=None), "do not match"),
    "not a backup": (lambda p: p.write_bytes(b'{"hello": "world"}\n'), "not a kgm ledger backup"),
    "not JSON": (lambda p: p.write_bytes(b"id,namespace\n1,ml\n"), "header is not JSON"),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "a huge line": (lambda p: p.write_bytes(_lines(p)[0] + b"x" * (2 << 20)), "longer than a row can be"),
    "a row of another table": (
        lambda p: p.write_bytes(b"".join(_lines(p)[:-1]) + b'{"version": 2}\n'),
        "not a row of allocations",
    ),
}


@pytest.mark.parametrize("damage", JSONL_DAMAGE)
def test_a_damaged_portable_backup_is_refused_and_the_ledger_is_unchanged(
    damage: str, tmp_path: Path, target: SqlLedger
) -> None:
    made = make_backup(tmp_path, BackupFormat.JSONL)
    change, reason = JSONL_DAMAGE[damage]
    change(made)
    with pytest.raises(BackupError, match=reason):
        restore(target, made, force=True)
    assert everything(target) == BEFORE


def _sql(path: Path, statement: str) -> None:
    with SqlLedger.open_backup_file(str(path), writable=True) as file, file._transaction(write=True) as db:
        db.execute(statement)  # the side door a tamperer would use


NEWER = MIGRATIONS[-1][0] + 1
SQLITE_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "damaged|malformed"),
    "a page overwritten": (
        lambda p: p.write_bytes(p.read_bytes()[:4096] + b"\xff" * 4096 + p.read_bytes()[8192:]),
        "damaged|malformed|not a database",
    ),
    "a row altered": (lambda p: _sql(p, "UPDATE allocations SET count = 7"), "checksum"),
    "a row deleted": (lambda p: _sql(p, "DELETE FROM allocations WHERE status = 'reserved'"), "truncated"),
    "no header": (lambda p: _sql(p, "DROP TABLE kgm_backup"), "not a whole kgm ledger backup"),
    "a newer schema": (
        lambda p: _sql(
            p, f"UPDATE kgm_backup SET header = json_set(header, '$.schemaVersion', {MIGRATIONS[-1][0] + 1})"
        ),
        "newer than this kgm knows",
    ),
}


@pytest.mark.parametrize("damage", SQLITE_DAMAGE)
def test_a_damaged_sqlite_backup_is_refused_and_the_ledger_is_unchanged(
    damage: str, tmp_path: Path, target: SqlLedger
) -> None:
    made = make_backup(tmp_path, BackupFormat.SQLITE)
    change, reason = SQLITE_DAMAGE[damage]
    change(made)
    with pytest.raises((BackupError, LedgerError), match=reason):
        restore(target, made, force=True)
    assert everything(target) == BEFORE


def test_a_row_the_database_refuses_rolls_back_the_whole_restore(tmp_path: Path, target: SqlLedger) -> None:
    # A duplicate id, with the header's count and checksum made to match: only the INSERT can catch it.
    made = make_backup(tmp_path, BackupFormat.JSONL)
    lines = _lines(made)
    rows = [*lines[1:], lines[1]]
    digest = hashlib.sha256(b"".join(rows)).hexdigest()
    _header_changed(made, tables={"allocations": len(rows)}, checksum=f"sha256:{digest}")
    made.write_bytes(_lines(made)[0] + b"".join(rows))
    with pytest.raises(LedgerError):
        restore(target, made, force=True)
    assert everything(target) == BEFORE


def test_no_file_there_is_refused(tmp_path: Path, target: SqlLedger) -> None:
    with pytest.raises(BackupError, match="no backup at"):
        restore(target, tmp_path / "nothing.jsonl")


def test_a_backup_never_overwrites_a_file(made: Path, tmp_path: Path) -> None:
    with (
        SqlLedger.open(f"sqlite:///{tmp_path / 'made.db'}") as ledger,
        pytest.raises(BackupError, match="exists"),
    ):
        backup(ledger, made, backup_format=BackupFormat.JSONL)


def test_the_sqlite_format_is_for_sqlite_ledgers_only(tmp_path: Path) -> None:
    with new_store("postgresql", tmp_path, "pg") as store, SqlLedger.open(store.url) as ledger:  # noqa: SIM117
        with pytest.raises(ValueError, match="not a SQLite ledger"):
            backup(ledger, tmp_path / "x.sqlite", backup_format=BackupFormat.SQLITE)
    assert not list(tmp_path.glob("*x.sqlite*"))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.status)
def test_a_row_line_reads_back_as_the_same_allocation(row: object) -> None:
    assert parse_row(row_line(row), "here") == row  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("count", "1"),
        ("count", 1.0),
        ("hourly_price", 2.5),
        ("hourly_price", "two"),
        ("start", "2026-03-01T12:00:00"),
        ("start", None),
        ("status", "lost"),
        ("end_inferred", 0),
        ("device_ids", "GPU-1"),
        ("namespace", 7),
    ],
)
def test_a_row_with_a_value_of_the_wrong_kind_is_refused(column: str, value: object) -> None:
    record = json.loads(row_line(ROWS[1])) | {column: value}
    with pytest.raises(BackupError, match=f"^line 9: ValueError: {column}: "):
        parse_row(json.dumps(record).encode(), "line 9")
