"""The SQL ledger: the same behaviour on SQLite and on PostgreSQL (every ``ledger`` test runs on both).

PostgreSQL is the server ``KGM_TEST_POSTGRES_URL`` names (``bash scripts/ci-postgres.sh`` starts one),
a fresh schema per test; without it the PostgreSQL cases are skipped, or fail when ``CI`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from inventory.domain.allocation import Allocation, AllocationFilter, Status, allocation_id
from inventory.ledger.sql import COLUMNS, MIGRATIONS, SqlLedger, redact
from inventory.ledger.store import LedgerError
from tests.support import postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Store:
    """Where a ledger lives, and a side door into it: SQL run on a connection of its own."""

    kind: str
    url: str
    query: Callable[[str], list[tuple[Any, ...]]]


def sqlite_query(path: Path, statement: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(statement).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        yield Store("sqlite", f"sqlite:///{path}", lambda statement: sqlite_query(path, statement))
        return
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url:
        yield Store("postgresql", url, lambda statement: postgres.execute(url, statement))


@pytest.fixture()
def ledger(store: Store) -> Iterator[SqlLedger]:
    with SqlLedger.open(store.url) as opened:
        yield opened


def alloc(name: str, *, start: datetime = T0, status: Status = Status.ACTIVE, **fields: Any) -> Allocation:
    uid = f"uid-{name}"
    base = Allocation(
        id=allocation_id(uid, "nvidia.com/gpu"),
        namespace="ml",
        pod=f"pod-{name}",
        pod_uid=uid,
        node="node-a",
        resource="nvidia.com/gpu",
        count=1,
        gpu_model="H100",
        hourly_price=Decimal("2.50"),
        status=status,
        start=start,
    )
    return dataclasses.replace(base, **fields)


FULL = Allocation(
    id=allocation_id("uid-full", "nvidia.com/mig-3g.40gb"),
    namespace="research",
    pod="train-0",
    pod_uid="uid-full",
    node="gpu-node-7",
    resource="nvidia.com/mig-3g.40gb",
    count=2,
    gpu_model="NVIDIA H100 80GB HBM3",
    hourly_price=Decimal("3.141592653589793238462643383279"),  # more digits than a float holds
    status=Status.RELEASED,
    start=datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),  # not in UTC
    end=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    end_inferred=True,
    device_ids=("MIG-1c2d", "MIG-3e4f"),
    team="vision",
    user="ada",
    workload_type="Training",
    expires_at=datetime(2026, 3, 1, 18, 0, tzinfo=UTC),
    max_duration_hours=48,
    cost_limit=Decimal("100.10"),
    message="quota 'vision' reached: ünïcode ✓",
)
RESERVATION = Allocation(
    id="reservation-1",
    namespace="ml",
    pod="notebook",
    pod_uid=None,
    node=None,
    resource="nvidia.com/gpu",
    count=1,
    gpu_model=None,
    hourly_price=Decimal("0"),
    status=Status.RESERVED,
    start=T0,
)


def test_columns_are_the_allocation_fields_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Allocation)) == COLUMNS


@pytest.mark.parametrize("allocation", [FULL, RESERVATION], ids=["every-field", "none-fields"])
def test_get_returns_every_field_as_recorded(ledger: SqlLedger, allocation: Allocation) -> None:
    assert ledger.record_start(allocation) is True
    got = ledger.get(allocation.id)
    assert got == allocation
    assert got is not None
    assert str(got.hourly_price) == str(allocation.hourly_price)  # the same digits, scale included
    assert str(got.cost_limit) == str(allocation.cost_limit)
    for moment in (got.start, got.end, got.expires_at):
        assert moment is None or moment.tzinfo == UTC
    assert isinstance(got.device_ids, tuple)
    assert isinstance(got.status, Status)


def test_get_of_an_unknown_id_is_none(ledger: SqlLedger) -> None:
    assert ledger.get("nobody") is None


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


def test_record_start_is_idempotent(ledger: SqlLedger) -> None:
    first = alloc("a")
    assert ledger.record_start(first) is True
    assert ledger.record_start(dataclasses.replace(first, pod="renamed")) is False
    assert ledger.get(first.id) == first


def test_record_end_closes_once(ledger: SqlLedger) -> None:
    a = alloc("a")
    ledger.record_start(a)
    end = T0 + timedelta(hours=3)
    assert ledger.record_end(a.id, end, inferred=True) is True
    assert ledger.record_end(a.id, end + timedelta(hours=1)) is False
    assert ledger.get(a.id) == dataclasses.replace(a, end=end, end_inferred=True, status=Status.RELEASED)


def test_record_end_stores_the_closing_status(ledger: SqlLedger) -> None:
    ledger.record_start(RESERVATION)
    assert ledger.record_end(RESERVATION.id, T0 + US, status=Status.EXPIRED) is True
    got = ledger.get(RESERVATION.id)
    assert got is not None
    assert (got.status, got.end, got.end_inferred) == (Status.EXPIRED, T0 + US, False)


def test_record_end_of_an_unknown_id_is_false(ledger: SqlLedger) -> None:
    assert ledger.record_end("nobody", T0) is False


@pytest.mark.parametrize("status", [Status.RESERVED, Status.ACTIVE])
def test_record_end_refuses_an_open_status(ledger: SqlLedger, status: Status) -> None:
    with pytest.raises(ValueError, match="ends as"):
        ledger.record_end("x", T0, status=status)


def test_claim_turns_a_reservation_into_the_pods_active_allocation(ledger: SqlLedger) -> None:
    ledger.record_start(RESERVATION)
    started = T0 + timedelta(minutes=5)
    assert ledger.claim(RESERVATION.id, pod_uid="uid-nb", pod="notebook-0", start=started) is True
    expected = dataclasses.replace(
        RESERVATION, status=Status.ACTIVE, pod_uid="uid-nb", pod="notebook-0", start=started
    )
    assert ledger.get(RESERVATION.id) == expected
    assert ledger.claim(RESERVATION.id, pod_uid="uid-other", pod="other", start=started) is False
    assert ledger.get(RESERVATION.id) == expected


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.RELEASED, Status.EXPIRED])
def test_claim_takes_only_a_reservation_still_reserved(ledger: SqlLedger, status: Status) -> None:
    row = dataclasses.replace(RESERVATION, status=status)
    ledger.record_start(row)
    assert ledger.claim(row.id, pod_uid="u", pod="p", start=T0) is False
    assert ledger.claim("nobody", pod_uid="u", pod="p", start=T0) is False
    assert ledger.get(row.id) == row


def test_open_allocations_are_the_reserved_and_active_ones(ledger: SqlLedger) -> None:
    rows = [
        alloc(status.value, status=status, start=T0 + timedelta(minutes=i)) for i, status in enumerate(Status)
    ]
    for row in rows:
        ledger.record_start(row)
    assert ledger.open_allocations() == [r for r in rows if r.status in (Status.RESERVED, Status.ACTIVE)]
    ledger.record_end(rows[1].id, T0 + timedelta(hours=1))
    assert [a.status for a in ledger.open_allocations()] == [Status.RESERVED]


FIND_ROWS: dict[str, dict[str, Any]] = {
    "a": {"namespace": "ml", "team": "vision", "status": Status.ACTIVE, "node": "n1"},
    "b": {"namespace": "ml", "team": "nlp", "status": Status.RELEASED, "node": "n2"},
    "c": {"namespace": "web", "team": "vision", "status": Status.RESERVED, "node": None},
    "d": {"namespace": "web", "team": None, "status": Status.EXPIRED, "node": "n1"},
}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (AllocationFilter(), "dcba"),
        (AllocationFilter(namespace="ml"), "ba"),
        (AllocationFilter(team="vision"), "ca"),
        (AllocationFilter(status=Status.RESERVED), "c"),
        (AllocationFilter(node="n1"), "da"),
        (AllocationFilter(namespace="web", node="n1"), "d"),
        (AllocationFilter(namespace="ml", team="vision", status=Status.ACTIVE, node="n1"), "a"),
        (AllocationFilter(namespace="nobody"), ""),
    ],
)
def test_find_filters_newest_first(ledger: SqlLedger, where: AllocationFilter, expected: str) -> None:
    for i, (name, fields) in enumerate(FIND_ROWS.items()):
        ledger.record_start(alloc(name, start=T0 + timedelta(hours=i), **fields))
    page = ledger.find(where)
    assert [a.pod for a in page.items] == [f"pod-{name}" for name in expected]
    assert (page.total, page.next_cursor) == (len(expected), None)


def test_find_pages_through_250_rows_without_gaps_or_duplicates(ledger: SqlLedger) -> None:
    # Three rows share each start, so pages also break between rows of one start (ordered by id).
    rows = [alloc(str(i), start=T0 + timedelta(minutes=i // 3)) for i in range(250)]
    ledger.record_many(rows, [])
    pages, cursor = [], None
    while True:
        page = ledger.find(AllocationFilter(), limit=100, cursor=cursor)
        pages.append(page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [len(p.items) for p in pages] == [100, 100, 50]
    assert {p.total for p in pages} == {250}
    seen = [a for p in pages for a in p.items]
    assert seen == sorted(rows, key=lambda a: (-a.start.timestamp(), a.id))


def test_find_with_a_filter_pages_within_the_matches(ledger: SqlLedger) -> None:
    rows = [alloc(str(i), start=T0 + timedelta(minutes=i), team="even" if i % 2 else "odd") for i in range(9)]
    ledger.record_many(rows, [])
    first = ledger.find(AllocationFilter(team="even"), limit=3)
    second = ledger.find(AllocationFilter(team="even"), limit=3, cursor=first.next_cursor)
    assert [a.pod for a in first.items + second.items] == ["pod-7", "pod-5", "pod-3", "pod-1"]
    assert (first.total, second.total, second.next_cursor) == (4, 4, None)


@pytest.mark.parametrize("cursor", ["not base64!", "bm90IGpzb24", "WzEsIDJd"])
def test_find_rejects_a_cursor_it_did_not_make(ledger: SqlLedger, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        ledger.find(AllocationFilter(), cursor=cursor)


WINDOW = (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end", "overlaps"),
    [
        (T0, T0 + H, False),  # ended exactly when the window opens
        (T0, T0 + H + US, True),
        (T0 + 2 * H, None, False),  # started exactly when the window closes
        (T0 + 2 * H - US, T0 + 3 * H, True),
        (T0, None, True),  # still open, started before
        (T0 + 1.5 * H, T0 + 1.6 * H, True),  # inside
        (T0, T0 + 3 * H, True),  # covers it
        (T0, T0 + 0.5 * H, False),
        (T0 + 3 * H, None, False),
    ],
)
def test_overlapping_window_edges(
    ledger: SqlLedger, start: datetime, end: datetime | None, overlaps: bool
) -> None:
    row = alloc("x", start=start, end=end, status=Status.ACTIVE if end is None else Status.RELEASED)
    ledger.record_start(row)
    assert list(ledger.overlapping(*WINDOW)) == ([row] if overlaps else [])


def test_overlapping_reads_past_one_batch_oldest_first(ledger: SqlLedger) -> None:
    rows = [alloc(str(i), start=T0 + timedelta(seconds=i // 2)) for i in range(2500)]
    ledger.record_many(rows, [])
    found = list(ledger.overlapping(T0, T0 + timedelta(days=1)))
    assert found == sorted(rows, key=lambda a: (a.start, a.id))


def test_record_many_inserts_new_and_closes_open(ledger: SqlLedger) -> None:
    known, closed = alloc("known"), alloc("closed")
    ledger.record_many([known, closed], [(closed.id, T0 + H, False)])
    new = alloc("new")
    ends = [(known.id, T0 + 2 * H, True), (closed.id, T0 + 3 * H, True), ("nobody", T0, False)]
    ledger.record_many([dataclasses.replace(known, pod="renamed"), new], ends)
    assert ledger.get(new.id) == new
    assert ledger.get(known.id) == dataclasses.replace(
        known, end=T0 + 2 * H, end_inferred=True, status=Status.RELEASED
    )
    assert ledger.get(closed.id) == dataclasses.replace(closed, end=T0 + H, status=Status.RELEASED)


@pytest.mark.parametrize("broken", ["a-start", "an-end"])
def test_record_many_is_all_or_nothing(ledger: SqlLedger, broken: str) -> None:
    running = alloc("running")
    ledger.record_start(running)
    starts = [alloc("new-1"), alloc("new-2"), alloc("new-3")]
    ends = [(running.id, T0 + H, False)]
    if broken == "a-start":
        starts.insert(2, alloc("bad", count=-1))  # breaks CHECK (count >= 0) in the database
        error: type[Exception] = LedgerError
    else:
        ends.append(("other", datetime(2026, 3, 1, 13, 0), False))  # naive: refused before the database
        error = ValueError
    with pytest.raises(error):
        ledger.record_many(starts, ends)
    assert ledger.find(AllocationFilter()).items == [running]
    assert ledger.record_start(starts[0]) is True  # and the ledger is usable afterwards


def test_naive_datetimes_are_refused(ledger: SqlLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_start(alloc("a", start=datetime(2026, 3, 1)))
    assert ledger.find(AllocationFilter()).total == 0


def test_a_second_open_applies_no_migration(store: Store) -> None:
    for _ in range(2):
        with SqlLedger.open(store.url) as ledger:
            assert ledger.schema_version() == MIGRATIONS[-1][0] == 1
    assert [row[0] for row in store.query("SELECT version FROM schema_version")] == [1]


def test_open_refuses_a_schema_newer_than_the_code(store: Store) -> None:
    SqlLedger.open(store.url).close()
    store.query("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(LedgerError, match="schema version 99"):
        SqlLedger.open(store.url)


def run_threads(work: Callable[[int], None], threads: int = 8) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, i) for i in range(threads)]:
            future.result()  # re-raises any thread's error


def test_threads_record_their_own_pods(ledger: SqlLedger) -> None:
    def work(thread: int) -> None:
        for i in range(200):
            row = alloc(f"{thread}-{i}", start=T0 + timedelta(seconds=i))
            assert ledger.record_start(row)
            assert ledger.record_end(row.id, row.start + H)

    run_threads(work)
    assert ledger.find(AllocationFilter(status=Status.RELEASED), limit=1).total == 1600
    assert ledger.open_allocations() == []


def test_threads_replaying_the_same_pods_record_each_once(ledger: SqlLedger) -> None:
    rows = [alloc(str(i), start=T0 + timedelta(seconds=i)) for i in range(200)]
    counts = {"started": 0, "ended": 0}
    lock = threading.Lock()

    def work(thread: int) -> None:
        for row in rows:
            started = ledger.record_start(row)
            ended = ledger.record_end(row.id, row.start + H)
            with lock:
                counts["started"] += started
                counts["ended"] += ended

    run_threads(work)
    assert counts == {"started": 200, "ended": 200}
    assert ledger.find(AllocationFilter(), limit=1).total == 200


CALLS: dict[str, Callable[[SqlLedger], object]] = {
    "record_start": lambda ledger: ledger.record_start(alloc("a")),
    "record_end": lambda ledger: ledger.record_end("a", T0),
    "claim": lambda ledger: ledger.claim("a", pod_uid="u", pod="p", start=T0),
    "get": lambda ledger: ledger.get("a"),
    "open_allocations": lambda ledger: ledger.open_allocations(),
    "find": lambda ledger: ledger.find(AllocationFilter()),
    "overlapping": lambda ledger: list(ledger.overlapping(T0, T0 + H)),
    "record_many": lambda ledger: ledger.record_many([alloc("a")], [("b", T0, False)]),
    "schema_version": lambda ledger: ledger.schema_version(),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_driver_errors_become_ledger_errors(
    ledger: SqlLedger, store: Store, call: Callable[[SqlLedger], object]
) -> None:
    store.query("DROP TABLE allocations")
    store.query("DROP TABLE schema_version")
    with pytest.raises(LedgerError) as caught:
        call(ledger)
    assert isinstance(caught.value.__cause__, sqlite3.Error | psycopg.Error)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_closed_ledger_raises_ledger_error(ledger: SqlLedger, call: Callable[[SqlLedger], object]) -> None:
    ledger.close()
    ledger.close()  # closing twice is fine
    with pytest.raises(LedgerError, match="closed"):
        call(ledger)


def test_postgresql_reconnects_after_the_server_drops_the_connection() -> None:
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url, SqlLedger.open(url) as ledger:
        ledger.record_start(alloc("a"))
        killed = postgres.execute(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = current_setting('application_name') AND pid <> pg_backend_pid()",
        )
        assert killed == [(True,)]
        with pytest.raises(LedgerError):  # the call that finds the connection gone fails: the caller retries
            ledger.get(alloc("a").id)
        assert ledger.get(alloc("a").id) == alloc("a")


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
