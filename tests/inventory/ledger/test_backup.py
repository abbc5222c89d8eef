"""The restore drill: a ledger backed up while a writer keeps recording allocations, restored into an
empty ledger (of the same kind and of the other), holds every write acknowledged before the backup
began, only whole transactions, and exactly one moment of the writer's history."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.ledger.backup import EXTENSIONS, BackupFormat, backup, restore
from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.backup_support import everything, new_store
from tests.inventory.ledger.sql_support import T0, H, alloc

#: Allocations per transaction of the writer: a drill's restore must hold each batch whole or not at all.
BATCH = 5
#: Batches written before the backup starts (1,500 rows: more than one page of the backup's reads).
BEFORE = 300
#: Batches the writer commits while a portable backup's snapshot is open (``ReadingSlowly``).
DURING = 20


def batch_rows(batch: int) -> list[Allocation]:
    return [alloc(f"{batch}-{i}", start=T0 + timedelta(seconds=batch)) for i in range(BATCH)]


def released(row: Allocation) -> Allocation:
    return dataclasses.replace(row, status=Status.RELEASED, end=row.start + H)


class ReadingSlowly(SqlLedger):
    """The backup's ledger, waiting after the first row it reads until the writer has committed
    :data:`DURING` more batches: writes certainly land while the snapshot is open, between its pages."""

    writer: Writer

    @contextmanager
    def snapshot(self) -> Iterator[tuple[int, Iterator[Allocation]]]:
        with super().snapshot() as (version, rows):
            yield version, self._waiting(rows)

    def _waiting(self, rows: Iterator[Allocation]) -> Iterator[Allocation]:
        for number, row in enumerate(rows):
            if number == 0:
                self.writer.at_first_row = self.writer.acknowledged
                wanted = self.writer.at_first_row + DURING
                deadline = time.monotonic() + 60
                while self.writer.acknowledged < wanted and self.writer.error is None:
                    assert time.monotonic() < deadline, "the writer stopped writing"
                    time.sleep(0.001)
            yield row


class Writer(threading.Thread):
    """kgm serve's part: batch n starts five allocations and ends batch n-1's, in one transaction
    (``record_many``), through a ledger of its own; ``acknowledged`` counts the batches committed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acknowledged = 0
        #: Batches acknowledged when the backup read its first row (a portable backup's drill).
        self.at_first_row: int | None = None
        self.started_enough = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with SqlLedger.open(self.url) as server:
                while not self.stop.is_set():
                    batch = self.acknowledged
                    ends = [(r.id, r.start + H, False) for r in batch_rows(batch - 1)] if batch else []
                    server.record_many(batch_rows(batch), ends)
                    self.acknowledged = batch + 1  # only this thread writes it; read as a whole int
                    if self.acknowledged == BEFORE:
                        self.started_enough.set()
        except BaseException as error:
            self.error = error
            self.started_enough.set()


# Each format from each kind it reads, into each kind (the sqlite format into PostgreSQL, without
# load: test_backup_refusals.py).
DRILLS = [
    ("sqlite", BackupFormat.SQLITE, "sqlite"),
    ("sqlite", BackupFormat.JSONL, "sqlite"),
    ("sqlite", BackupFormat.JSONL, "postgresql"),
    ("postgresql", BackupFormat.JSONL, "postgresql"),
    ("postgresql", BackupFormat.JSONL, "sqlite"),
]


@pytest.mark.parametrize(("source", "backup_format", "target"), DRILLS)
def test_a_backup_under_write_load_restores_every_acknowledged_write_and_one_moment(
    source: str, backup_format: BackupFormat, target: str, tmp_path: Path
) -> None:
    with new_store(source, tmp_path, "source") as served, new_store(target, tmp_path, "target") as empty:
        writer = Writer(served.url)
        writer.start()
        try:
            assert writer.started_enough.wait(120)
            assert writer.error is None, writer.error
            with ReadingSlowly.open(served.url) as ledger:
                ledger.writer = writer
                before = writer.acknowledged
                began = time.monotonic()
                made = backup(
                    ledger, tmp_path / f"drill{EXTENSIONS[backup_format]}", backup_format=backup_format
                )
                seconds = time.monotonic() - began
                after = writer.acknowledged
        finally:
            writer.stop.set()
            writer.join(60)
        assert writer.error is None, writer.error
        with SqlLedger.open(empty.url) as restored_into:
            done = restore(restored_into, made.path)
            rows = everything(restored_into)

    # One moment of the writer's history: batches 0..last, each whole; all but the last ended with it.
    last = len(rows) // BATCH - 1
    expected = [released(r) for b in range(last) for r in batch_rows(b)] + batch_rows(last)
    assert rows == {r.id: r for r in expected}
    # Every batch acknowledged before the backup began is there; none acknowledged after it returned,
    # nor, in a snapshot, after it read its first row (those land between its pages: a read that is not
    # one snapshot finds some of them).
    assert before <= last + 1 <= after
    if writer.at_first_row is not None:
        assert last + 1 <= writer.at_first_row < after
    assert done.rows == made.header.tables["allocations"] == len(rows)
    print(
        f"\ndrill {source} -> {backup_format} -> {target}: {before * BATCH} rows acknowledged before the "
        f"backup, {(after - before) * BATCH} during it, {len(rows)} restored, backup {seconds:.2f} s "
        f"({made.bytes} bytes)"
    )
