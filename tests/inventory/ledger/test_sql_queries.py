"""Reading the SQL ledger: ``find``'s filters, order and cursor paging, and ``overlapping``'s window edges
and batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from inventory.domain.allocation import AllocationFilter, Status
from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.sql_support import T0, US, H, alloc

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
