"""The reconciler into the ledger: pod events per second, and a resync over 100,000 pods.

Events go through ``Reconciler.on_pod`` exactly as the watch delivers them (a pod bound, then a
replayed MODIFIED, then deleted), on SQLite (a WAL file) and on PostgreSQL (when
``KGM_TEST_POSTGRES_URL`` names a server; ``bash scripts/ci-postgres.sh`` starts one), side by side
in one run. The resync compares an empty ledger with a complete listing of 100,000 GPU pods, so
every pod is opened in one batch: the worst case after a restart on a fresh ledger.

Run from the repository root: ``.venv/bin/python -m benchmarks.reconciler [--events N] [--pods N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger
from inventory.live.static import cache_of
from tests.support.postgres import fresh_schema

NODES = 500
CACHE = cache_of(
    parse_cluster(
        {
            "nodes": [
                {
                    "name": f"gpu-{i:04d}",
                    "gpus": [
                        {"model": "H100-80GB", "count": 4},
                        {"model": "H100-80GB", "count": 4, "mig": ["1g.10gb"] * 7},
                    ],
                }
                for i in range(NODES)
            ]
        }
    )
)
SNAPSHOT = CACHE.snapshot()


def shape_of(node: str) -> NodeShape | None:
    state = SNAPSHOT.states.get(NodeName(node))
    return state.shape if state else None


def gpu_pod(i: int, *, deleted: bool = False) -> dict[str, Any]:
    resource = "nvidia.com/gpu" if i % 3 == 0 else "nvidia.com/mig-1g.10gb"
    metadata: dict[str, Any] = {
        "uid": str(uuid.UUID(int=i)),
        "name": f"job-{i}",
        "namespace": f"team-{i % 20}",
        "creationTimestamp": "2026-11-27T07:00:00Z",
    }
    if deleted:
        metadata["deletionTimestamp"] = "2026-11-27T09:00:00Z"
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": f"gpu-{i % NODES:04d}",
            "containers": [{"name": "c", "resources": {"limits": {resource: "1"}}}],
        },
        "status": {"phase": "Running"},
    }


def events_per_second(url: str, events: int) -> tuple[float, float]:
    """(events/s, p99 ms) of a stream: ADDED, a replayed MODIFIED, DELETED for each of events/3 pods."""
    with SqlLedger.open(url) as ledger:
        reconciler = Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable())
        stream = []
        for i in range(events // 3):
            stream += [("ADDED", gpu_pod(i)), ("MODIFIED", gpu_pod(i)), ("DELETED", gpu_pod(i, deleted=True))]
        samples = []
        started = time.perf_counter()
        for kind, pod in stream:
            t = time.perf_counter()
            reconciler.on_pod(kind, pod)
            samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    samples.sort()
    return len(stream) / elapsed, samples[int(len(samples) * 0.99)] * 1e3


def resync(url_for: Callable[[str], str], pods: int) -> tuple[float, float]:
    """(seconds, peak MiB of Python allocations) of one resync opening ``pods`` allocations.

    Timed without tracing (tracemalloc slows allocation-heavy code several times over), then run
    again on a fresh ledger with tracing for the peak.
    """
    listing = [gpu_pod(i) for i in range(pods)]
    seconds = 0.0
    peak = 0
    for traced in (False, True):
        with SqlLedger.open(url_for(f"resync-{traced}")) as ledger:
            reconciler = Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable())
            gc.collect()
            if traced:
                tracemalloc.start()
            started = time.perf_counter()
            plan = reconciler.resync(listing)
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            else:
                seconds = time.perf_counter() - started
            assert plan is not None and len(plan.starts) == pods
            assert len(ledger.open_allocations()) == pods
    return seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=15_000)
    parser.add_argument("--pods", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kgm-bench-") as scratch, contextlib.ExitStack() as schemas:
        backends: dict[str, Callable[[str], str]] = {
            "sqlite": lambda name: f"sqlite:///{Path(scratch) / name}.db"
        }
        postgres = os.environ.get("KGM_TEST_POSTGRES_URL")
        if postgres:
            # Each ledger in a schema of its own, dropped at the end: the server's other users are untouched.
            backends["postgresql"] = lambda name: schemas.enter_context(
                fresh_schema(postgres, prefix="kgm_bench", fast_commits=False)
            )
        print(
            f"reconciler -> ledger: {args.events} pod events (ADDED, replayed MODIFIED, DELETED); "
            f"a resync over {args.pods} pods (an empty ledger: every pod opened)"
        )
        print(f"{'backend':<11}{'events/s':>10}{'p99 ms':>9}{'resync s':>10}{'pods/s':>10}{'peak MiB':>10}")
        for name, url_for in backends.items():
            rate, p99 = events_per_second(url_for("events"), args.events)
            seconds, peak = resync(url_for, args.pods)
            print(
                f"{name:<11}{rate:>10.0f}{p99:>9.2f}{seconds:>10.2f}{args.pods / seconds:>10.0f}{peak:>10.1f}"
            )
        if not postgres:
            print("postgresql: skipped (set KGM_TEST_POSTGRES_URL; scripts/ci-postgres.sh starts one)")
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
