"""`kgm ledger backup` and `kgm ledger restore`: the ledger named as kgm serve takes it, one summary line,
exit 0 when done, 1 when refused or failed (and nothing changed), 2 for a usage error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inventory.ledger.sql import SqlLedger
from kgm.cli import main
from tests.inventory.ledger.backup_support import ROWS, everything
from tests.inventory.ledger.sql_support import alloc

BACKED_UP = re.compile(
    r"backed up (\S+) to (\S+) \((jsonl|sqlite), schema 2, sqlite at \S+Z\): "
    r"allocations (\d+) rows, (\d+) bytes, \d+\.\d\d s"
)
RESTORED = re.compile(
    r"restored (\S+) \((jsonl|sqlite), schema 2, sqlite at \S+Z\) into (\S+): "
    r"allocations (\d+) rows, (\d+) bytes, \d+\.\d\d s"
)


@pytest.fixture()
def served(tmp_path: Path) -> str:
    """A SQLite ledger holding :data:`ROWS`, by URL."""
    url = f"sqlite:///{tmp_path / 'served.db'}"
    with SqlLedger.open(url) as ledger:
        for row in ROWS:
            assert ledger.record_reservation(row) if row.status == "reserved" else ledger.record_start(row)
    return url


def ledger(*argv: str, environ: dict[str, str] | None = None) -> int:
    return main(["ledger", *argv], environ or {})


@pytest.mark.parametrize("backup_format", ["jsonl", "sqlite"])
def test_backup_then_restore_into_a_new_ledger_prints_one_line_each(
    backup_format: str, served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"b.{backup_format}"
    assert ledger("backup", "--ledger", served, "--to", str(out), "--format", backup_format) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert (found := BACKED_UP.fullmatch(line)), line
    size = out.stat().st_size
    assert found.groups() == (served, str(out), backup_format, "3", str(size))

    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    assert ledger("restore", "--ledger", restored, "--from", str(out)) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert (found := RESTORED.fullmatch(line)), line
    assert found.groups() == (str(out), backup_format, restored, "3", str(size))
    with SqlLedger.open(restored) as back:
        assert everything(back) == {r.id: r for r in ROWS}


def test_the_ledger_comes_from_kgm_ledger_as_for_kgm_serve(served: str, tmp_path: Path) -> None:
    assert ledger("backup", "--to", str(tmp_path / "b.jsonl"), environ={"KGM_LEDGER": served}) == 0
    assert (tmp_path / "b.jsonl").read_bytes().startswith(b'{"format": "kgm-ledger-backup"')


@pytest.mark.parametrize(
    ("name", "magic"),
    [("b", b"SQLite format 3\x00"), ("b.db", b"SQLite format 3\x00"), ("b.jsonl", b'{"format": ')],
)
def test_without_format_the_suffix_chooses_else_a_sqlite_ledger_gets_its_online_backup(
    name: str, magic: bytes, served: str, tmp_path: Path
) -> None:
    assert ledger("backup", "--ledger", served, "--to", str(tmp_path / name)) == 0
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_a_directory_gets_a_dated_name_and_keep_rotates_only_kgm_backups(
    served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / "ledger-20250101T000000Z.jsonl", backups / "ledger-20250102T000000Z.sqlite"]
    other = backups / "notes.txt"
    for path in [*old, other]:
        path.write_text("x")
    assert ledger("backup", "--ledger", served, "--to", str(backups), "--keep", "2") == 0
    assert ", 1 older removed" in capsys.readouterr().out
    (new,) = set(backups.iterdir()) - {*old, other}
    assert re.fullmatch(r"ledger-\d{8}T\d{6}Z\.sqlite", new.name)
    assert set(backups.iterdir()) == {old[1], new, other}


def test_a_ledger_with_rows_is_refused_with_exit_1_naming_what_force_would_replace(
    served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.jsonl"
    assert ledger("backup", "--ledger", served, "--to", str(out)) == 0
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with SqlLedger.open(target) as other:
        other.record_start(alloc("x"))
    assert ledger("restore", "--ledger", target, "--from", str(out)) == 1
    assert (
        "kgm ledger restore: the target ledger is not empty: it holds 1 allocations"
        in capsys.readouterr().err
    )
    assert ledger("restore", "--ledger", target, "--from", str(out), "--force") == 0
    with SqlLedger.open(target) as other:
        assert everything(other) == {r.id: r for r in ROWS}


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["backup", "--to", "{tmp}/b.jsonl"], 2, "no ledger: give --ledger URL or set $KGM_LEDGER"),
        (["backup", "--ledger", "{served}", "--to", "{tmp}/b.jsonl", "--keep", "2"], 2, "is not one"),
        (["backup", "--ledger", "{served}", "--to", "{tmp}", "--keep", "0"], 2, "at least 1"),
        (["backup", "--ledger", "mysql://x", "--to", "{tmp}/b"], 2, "not a ledger URL"),
        (["backup", "--ledger", "sqlite:///{tmp}/typo.db", "--to", "{tmp}/b"], 1, "no ledger at"),
        (["backup", "--ledger", "{served}", "--to", "{tmp}/none/b"], 1, "none is not a directory"),
        (["restore", "--ledger", "{served}", "--from", "{tmp}/none.jsonl"], 1, "no backup at"),
        (
            ["restore", "--ledger", "sqlite:///{tmp}/new.db", "--from", "{served_file}"],
            1,
            "not a whole kgm ledger backup",
        ),
    ],
)
def test_mistakes_exit_2_and_failures_exit_1_in_one_line(
    argv: list[str], code: int, said: str, served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill = {"tmp": str(tmp_path), "served": served, "served_file": served.removeprefix("sqlite:///")}
    assert ledger(*(a.format(**fill) for a in argv)) == code
    err = capsys.readouterr().err
    assert said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "typo.db").exists()
