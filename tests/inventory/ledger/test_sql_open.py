"""Opening the SQL ledger: its schema (columns, types, migrations), the URLs and files it accepts or
refuses, passwords kept out of errors and logs, and PostgreSQL tests skipped locally but failing in CI."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import psycopg
import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.ledger import sql
from inventory.ledger.schema import COLUMNS, MIGRATIONS
from inventory.ledger.sql import SqlLedger, redact
from inventory.ledger.store import LedgerError
from tests.inventory.ledger.sql_support import FULL, RESERVATION, T0, H, Store, sqlite_query
from tests.support import postgres


def test_columns_are_the_allocation_fields_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Allocation)) == COLUMNS


def test_columns_keep_times_and_money_exact(ledger: SqlLedger, store: Store) -> None:
    ledger.record_start(FULL)
    if store.kind == "sqlite":
        rows = store.query("SELECT typeof(hourly_price), hourly_price, typeof(start), start FROM allocations")
        price, start = "3.141592653589793238462643383279", "2026-03-01T12:00:00.123456+00:00"
        assert rows == [("text", price, "text", start)]
    else:
        rows = store.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'allocations' "
            "AND column_name IN ('hourly_price', 'start', 'end_inferred')"
        )
        assert sorted(rows) == [
            ("end_inferred", "boolean"),
            ("hourly_price", "numeric"),
            ("start", "timestamp with time zone"),
        ]


def test_a_second_open_applies_no_migration(store: Store) -> None:
    for _ in range(2):
        with SqlLedger.open(store.url) as ledger:
            assert ledger.schema_version() == MIGRATIONS[-1][0] == 2
    assert sorted(row[0] for row in store.query("SELECT version FROM schema_version")) == [1, 2]


def test_open_refuses_a_schema_newer_than_the_code(store: Store) -> None:
    SqlLedger.open(store.url).close()
    store.query("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(LedgerError, match="schema version 99"):
        SqlLedger.open(store.url)


def test_sqlite_urls_and_memory(tmp_path: Path) -> None:
    for url in ("sqlite:///:memory:", ":memory:", str(tmp_path / "plain.db"), f"sqlite:///{tmp_path}/u.db"):
        with SqlLedger.open(url) as ledger:
            assert ledger.record_start(FULL) is True
            assert ledger.get(FULL.id) == FULL
    with SqlLedger.open(":memory:") as ledger:
        assert ledger.get(FULL.id) is None  # each :memory: ledger is its own database


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    SqlLedger.open(str(tmp_path / "wal.db")).close()
    assert sqlite_query(tmp_path / "wal.db", "PRAGMA journal_mode") == [("wal",)]


def test_an_unknown_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a ledger URL"):
        SqlLedger.open("mysql://root:hunter2@db/ledger")


@pytest.mark.parametrize("where", ["missing-dir/ledger.db", "not-a-database.db", "a-directory"])
def test_sqlite_files_that_cannot_be_opened_raise_ledger_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "not-a-database.db").write_bytes(b"this is not SQLite " * 100)
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(LedgerError) as caught:
        SqlLedger.open(str(tmp_path / where))
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_postgresql_password_never_reaches_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LedgerError) as caught:
        SqlLedger.open("postgresql://kgm:s3cret-pw@127.0.0.1:1/ledger?connect_timeout=2")
    assert "kgm:***@127.0.0.1:1" in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.Error)
    assert "s3cret-pw" not in str(caught.value) + caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://kgm:pw@db:5432/ledger", "postgresql://kgm:***@db:5432/ledger"),
        ("postgresql:///ledger?host=/run/pg&password=pw", "postgresql:///ledger?host=/run/pg&password=***"),
        ("postgresql:///ledger?host=/var/run/postgresql", "postgresql:///ledger?host=/var/run/postgresql"),
        ("postgresql://kgm@db/ledger", "postgresql://kgm@db/ledger"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_postgresql_is_skipped_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        postgres.server_url_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        postgres.server_url_or_skip()


def test_migration_2_leaves_one_open_reservation_per_pod(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = dataclasses.replace(RESERVATION, id="older", expires_at=T0 + H)
    newer = dataclasses.replace(RESERVATION, id="newer", start=T0 + H)
    with monkeypatch.context() as version_1:
        version_1.setattr(sql, "MIGRATIONS", MIGRATIONS[:1])
        with SqlLedger.open(store.url) as ledger:
            assert ledger.record_start(older) and ledger.record_start(newer)
    with SqlLedger.open(store.url) as ledger:
        assert ledger.get("newer") == newer
        assert ledger.get("older") == dataclasses.replace(older, status=Status.EXPIRED, end=T0 + H)
