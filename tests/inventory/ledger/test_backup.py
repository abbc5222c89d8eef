"""The restore drill: a ledger backed up while a writer keeps recording allocations, restored into an
empty ledger (of the same kind and of the other), holds every write acknowledged before the backup
began, only whole transactions, and exactly one moment of the writer's history."""

from __future__ import annotations

import dataclasses
import threading
import time
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
#: Batches written before the backup starts (3,000 rows: the backup takes long enough for the writer to
#: commit batches while it runs, and the drill stays a few seconds).
BEFORE = 600


def batch_rows(batch: int) -> list[Allocation]:
    return [alloc(f"{batch}-{i}", start=T0 + timedelta(seconds=batch)) for i in range(BATCH)]


def released(row: Allocation) -> Allocation:
    return dataclasses.replace(row, status=Status.RELEASED, end=row.start + H)


class Writer(threading.Thread):
    """kgm serve's part: batch n starts five allocations and ends batch n-1's, in one transaction
    (``record_many``), through a ledger of its own; ``acknowledged`` counts the batches committed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acknowledged = 0
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


DRILLS = [
    ("sqlite", BackupFormat.SQLITE, "sqlite"),
    ("sqlite", BackupFormat.SQLITE, "postgresql"),
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
            with SqlLedger.open(served.url) as ledger:
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
    # Every batch acknowledged before the backup began is there; none acknowledged after it returned.
    assert before <= last + 1 <= after
    assert done.rows == made.header.tables["allocations"] == len(rows)
    print(
        f"\ndrill {source} -> {backup_format} -> {target}: {before * BATCH} rows acknowledged before the "
        f"backup, {(after - before) * BATCH} during it, {len(rows)} restored, backup {seconds:.2f} s "
        f"({made.bytes} bytes)"
    )
