"""``kgm ledger backup`` and ``kgm ledger restore``: the allocation ledger to a file and back
(``inventory.ledger.backup`` has the formats; docs/operations.md, "Backups", the procedure).

Each prints one line: what was written or restored, its rows per table, its bytes and the seconds it
took. Exit codes: 0 done; 1 refused or failed (a ledger that has rows, a damaged or truncated file, a
newer schema, the database away), and nothing changed; 2 a usage error (no ledger named, bad options).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inventory.ledger.backup import (
    BackupError,
    BackupFormat,
    Header,
    backup,
    backup_name,
    restore,
    rotate,
)
from inventory.ledger.sql import SqlLedger, redact
from inventory.ledger.store import LedgerError

USAGE = 2
FAILED = 1


def add_ledger_command(commands: Any, environ: Mapping[str, str]) -> None:
    """``kgm ledger {backup,restore}`` on the subparsers ``commands`` of kgm's parser."""
    ledger = commands.add_parser("ledger", help="back up and restore the allocation ledger")
    actions = ledger.add_subparsers(dest="ledger_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ledger",
        default=environ.get("KGM_LEDGER"),
        help="the ledger, as kgm serve takes it: sqlite:///FILE or postgresql://... (default $KGM_LEDGER)",
    )
    save = actions.add_parser(
        "backup", parents=[common], help="write the ledger, as of one moment, to a new file"
    )
    save.add_argument(
        "--to",
        type=Path,
        required=True,
        help="a new file; or a directory, to write ledger-YYYYMMDDTHHMMSSZ.<format> in it",
    )
    save.add_argument(
        "--format",
        choices=[f.value for f in BackupFormat],
        help="jsonl: portable, any ledger into any; sqlite: SQLite's online backup, a database file "
        "(SQLite ledgers only). Default: the file's suffix (.jsonl, .sqlite, .db), else sqlite for a "
        "SQLite ledger and jsonl for PostgreSQL",
    )
    save.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="with a directory: then delete all but the newest N backups kgm named there",
    )
    load = actions.add_parser(
        "restore", parents=[common], help="replace the ledger's allocations with a backup's, all or nothing"
    )
    load.add_argument(
        "--from", dest="source", type=Path, required=True, help="a file kgm ledger backup wrote"
    )
    load.add_argument(
        "--force", action="store_true", help="replace the allocations of a ledger that has some"
    )


def run_ledger_command(
    args: argparse.Namespace, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> int:
    name = f"kgm ledger {args.ledger_command}"
    if not args.ledger:
        return _fail(name, "no ledger: give --ledger URL or set $KGM_LEDGER", USAGE)
    if args.ledger_command == "backup" and args.keep is not None:
        if args.keep < 1:
            return _fail(name, f"--keep takes a number of backups, at least 1, not {args.keep}", USAGE)
        if not args.to.is_dir():
            return _fail(name, f"--keep rotates the backups in a directory; {args.to} is not one", USAGE)
    started = time.monotonic()
    try:
        if args.ledger_command == "backup":
            with SqlLedger.open(args.ledger, must_exist=True) as ledger:
                return _backup(ledger, args, clock, started)
        with SqlLedger.open(args.ledger) as ledger:
            result = restore(ledger, args.source, force=args.force)
            print(
                f"restored {args.source} ({result.format}, {_made(result.header)}) into "
                f"{redact(args.ledger)}: {_tables(result.header)}, {args.source.stat().st_size} bytes, "
                f"{time.monotonic() - started:.2f} s"
            )
            return 0
    except (BackupError, LedgerError, OSError) as error:
        return _fail(name, str(error), FAILED)
    except ValueError as error:  # a URL that is none, a format the ledger cannot write
        return _fail(name, str(error), USAGE)


def _backup(
    ledger: SqlLedger, args: argparse.Namespace, clock: Callable[[], datetime], started: float
) -> int:
    backup_format = _format(args.format, args.to, ledger.database)
    path: Path = args.to / backup_name(clock(), backup_format) if args.to.is_dir() else args.to
    result = backup(ledger, path, backup_format=backup_format, clock=clock)
    removed = rotate(args.to, args.keep) if args.keep is not None else []
    kept = f", {len(removed)} older removed" if removed else ""
    print(
        f"backed up {redact(args.ledger)} to {result.path} ({result.format}, {_made(result.header)}): "
        f"{_tables(result.header)}, {result.bytes} bytes, {time.monotonic() - started:.2f} s{kept}"
    )
    return 0


def _format(given: str | None, to: Path, database: str) -> BackupFormat:
    """``--format``; else the file's suffix says (``.jsonl``, ``.sqlite``, ``.db``); else SQLite's own
    for a SQLite ledger and the portable one for PostgreSQL."""
    if given:
        return BackupFormat(given)
    by_suffix = {".jsonl": BackupFormat.JSONL, ".sqlite": BackupFormat.SQLITE, ".db": BackupFormat.SQLITE}
    if not to.is_dir() and to.suffix in by_suffix:
        return by_suffix[to.suffix]
    return BackupFormat.SQLITE if database == "sqlite" else BackupFormat.JSONL


def _made(header: Header) -> str:
    return f"schema {header.schema_version}, {header.source} at {header.created_at:%Y-%m-%dT%H:%M:%SZ}"


def _tables(header: Header) -> str:
    return ", ".join(f"{table} {rows} rows" for table, rows in header.tables.items())


def _fail(name: str, message: str, code: int) -> int:
    print(f"{name}: {message}", file=sys.stderr)
    return code
