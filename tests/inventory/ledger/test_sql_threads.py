"""The SQL ledger shared by threads: each row recorded once, however many threads write or replay it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from inventory.domain.allocation import AllocationFilter, Status
from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.sql_support import T0, H, alloc


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
