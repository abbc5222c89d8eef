"""The ledger under a pod watch: events per second on SQLite and PostgreSQL, and a resync-sized batch.

Measures, side by side in one run, on the same pre-generated event stream: pod events written one
at a time as the reconciler writes them (``record_start`` of a new pod, ``record_end`` of a finished
one, and replays of both, as a watch re-lists after a reconnect), each its own transaction with
production durability (SQLite: a WAL file with ``synchronous=NORMAL``; PostgreSQL: the server's own
``synchronous_commit``). Then a resync: ``record_many`` of 100,000 starts into an empty ledger, its
time, and the peak memory Python allocates meanwhile (tracemalloc, in a second run, since tracing
slows the first; the input allocations are built beforehand and not counted; SQLite's page cache
and libpq's buffers are C memory that tracemalloc does not see).

PostgreSQL is the server ``KGM_TEST_POSTGRES_URL`` names (``bash scripts/ci-postgres.sh`` starts one),
in a schema of its own dropped afterwards; without it, its rows say skipped.

Run from the repository root: ``.venv/bin/python -m benchmarks.ledger [--events N] [--batch N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from inventory.domain.allocation import Allocation, AllocationFilter, Status, allocation_id
from inventory.ledger.sql import SQLITE_VERSION, SqlLedger
from tests.support import postgres

T0 = datetime(2026, 11, 27, tzinfo=UTC)
#: The share of each event kind: new pods, finished pods, then replays of starts and ends seen before.
MIX = {"start": 0.40, "end": 0.30, "replayed start": 0.15, "replayed end": 0.15}


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    allocation: Allocation
    at: datetime


def pod(n: int, start: datetime) -> Allocation:
    uid = f"bench-{n:08d}"
    return Allocation(
        id=allocation_id(uid, "nvidia.com/mig-1g.10gb"), namespace=f"team-{n % 20}", pod=f"job-{n}",
        pod_uid=uid, node=f"gpu-node-{n % 500}", resource="nvidia.com/mig-1g.10gb", count=1,
        gpu_model="NVIDIA H100 80GB HBM3", hourly_price=Decimal("0.5357"), status=Status.ACTIVE, start=start,
        device_ids=(f"MIG-{uid}",), team=f"team-{n % 20}", workload_type="Inference",
    )  # fmt: skip


def event_stream(count: int, seed: int) -> tuple[list[Event], int, int]:
    """``count`` events drawn from MIX; the number of distinct pods, and of pods still running."""
    rng = random.Random(seed)
    running: list[Allocation] = []
    started: list[Allocation] = []
    ended: list[Event] = []
    events: list[Event] = []
    kinds, weights = list(MIX), list(MIX.values())
    for i in range(count):
        now = T0 + timedelta(seconds=i)
        kind = rng.choices(kinds, weights)[0]
        if kind == "end" and running:
            finished = running.pop(rng.randrange(len(running)))
            ended.append(Event("end", finished, now))
            events.append(ended[-1])
        elif kind == "replayed start" and started:
            events.append(Event(kind, rng.choice(started), now))
        elif kind == "replayed end" and ended:
            events.append(Event(kind, rng.choice(ended).allocation, rng.choice(ended).at))
        else:
            started.append(pod(len(started), now))
            running.append(started[-1])
            events.append(Event("start", started[-1], now))
    return events, len(started), len(running)


def apply(ledger: SqlLedger, events: list[Event]) -> list[float]:
    """Latency of each event in seconds, written one by one."""
    latencies = []
    for event in events:
        began = time.perf_counter()
        if event.kind.endswith("start"):
            ledger.record_start(event.allocation)
        else:
            ledger.record_end(event.allocation.id, event.at)
        latencies.append(time.perf_counter() - began)
    return latencies


Store = Callable[[], AbstractContextManager[str]]


@contextmanager
def sqlite_store() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="kgm-ledger-bench-") as directory:
        yield f"sqlite:///{Path(directory) / 'ledger.db'}"


def postgres_store(server: str) -> Store:
    return lambda: postgres.fresh_schema(server, prefix="kgm_bench", fast_commits=False)


def measure(
    name: str, store: Store, events: list[Event], pods: int, running: int, batch: list[Allocation]
) -> str:
    with store() as url, SqlLedger.open(url) as ledger:
        latencies = apply(ledger, events)
        total = ledger.find(AllocationFilter(), limit=1).total
        open_now = len(ledger.open_allocations())
    if (total, open_now) != (pods, running):
        raise SystemExit(f"{name}: {total} rows and {open_now} open, expected {pods} and {running}")
    with store() as url, SqlLedger.open(url) as ledger:
        began = time.perf_counter()
        ledger.record_many(batch, [])
        batch_s = time.perf_counter() - began
    with store() as url, SqlLedger.open(url) as ledger:
        tracemalloc.start()
        ledger.record_many(batch, [])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    ms = sorted(x * 1000 for x in latencies)
    p50, p99, rate = statistics.median(ms), ms[int(len(ms) * 0.99)], len(events) / sum(latencies)
    return (
        f"| {name:<10} | {rate:>9,.0f} | {p50:>7.3f} | {p99:>7.3f} | {ms[-1]:>7.2f} "
        f"| {batch_s:>7.2f} | {len(batch) / batch_s:>9,.0f} | {peak / 2**20:>8.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="pod events written one by one")
    parser.add_argument("--batch", type=int, default=100_000, help="starts in the resync record_many")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    events, pods, running = event_stream(args.events, args.seed)
    batch = [pod(n, T0 + timedelta(seconds=n)) for n in range(args.batch)]
    shares = ", ".join(f"{sum(e.kind == k for e in events) / len(events):.0%} {k}" for k in MIX)
    print(f"ledger: {len(events):,} pod events ({shares}); resync batch of {len(batch):,} starts")
    print("| backend    |  events/s |  p50 ms |  p99 ms |  max ms | batch s |   batch/s | peak MiB |")
    print("| ---------- | --------: | ------: | ------: | ------: | ------: | --------: | -------: |")
    print(measure("sqlite", sqlite_store, events, pods, running, batch))
    server = postgres.server_url()
    if server is None:
        print(f"| postgresql | skipped: {postgres.ENV} is not set (bash scripts/ci-postgres.sh prints one) |")
    else:
        print(measure("postgresql", postgres_store(server), events, pods, running, batch))
    versions = f"SQLite {SQLITE_VERSION}"
    if server is not None:
        versions += f", PostgreSQL {postgres.execute(server, 'SHOW server_version')[0][0]} (local socket)"
    print(
        f"machine: {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {versions}"
    )


if __name__ == "__main__":
    main()
