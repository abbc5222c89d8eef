"""The inventory cache at scale: 5,000 nodes with 8 GPUs each (mixed MIG layouts).

Measures, side by side in one run: the time to apply one GpuNode update, to take a snapshot right
after an update (the worst case: nothing can be reused), to judge every node of a snapshot (what
a scheduler filter over the whole cluster costs), and the memory the cache holds per node.

Run from the repository root: ``.venv/bin/python -m benchmarks.inventory [--nodes N]``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.model import NodeName
from inventory.domain.readings import GpuReading, GpuUuid, HostReading, MigDeviceReading
from inventory.live.cache import InventoryCache

# Per-GPU layouts cycled over a node's 8 GPUs: whole GPUs and the common MIG partitions.
LAYOUTS: tuple[tuple[tuple[str, int], ...] | None, ...] = (
    None,
    None,
    (("1g.10gb", 2), ("1g.10gb", 3), ("2g.20gb", 0), ("3g.40gb", 4)),
    tuple(("1g.10gb", i) for i in range(7)),
    (("3g.40gb", 0), ("3g.40gb", 4)),
    None,
    (("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)),
    (("7g.80gb", 0),),
)
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def node_object(name: str, generation: int) -> dict[str, Any]:
    gpus = []
    for index, layout in enumerate(LAYOUTS):
        devices = tuple(
            MigDeviceReading(
                uuid=GpuUuid(f"MIG-{name}-{index}-{start}"),
                profile=profile,
                gpu_instance_id=start + 1,
                memory_total_mib=9856,
                placement_start=start,
                placement_size=1,
            )
            for profile, start in layout or ()
        )
        gpus.append(
            GpuReading(
                index=index,
                uuid=GpuUuid(f"GPU-{name}-{index}"),
                name="NVIDIA H100 80GB HBM3",
                memory_total_mib=81559,
                memory_used_mib=512,
                temperature_c=40 + index,
                power_w=120.5,
                utilization_pct=None if layout else 30,
                mig_enabled=layout is not None,
                mig_enabled_after_reset=layout is not None,  # the mode after a reset: unchanged
                mig_devices=devices,
            )
        )
    status = build_status(
        node_name=name,
        host=HostReading("550.54.15", "12.4", tuple(gpus)),
        health={g.uuid: GpuHealth(healthy=True, reason=None) for g in gpus},
        assignments=(),
        catalogue=builtin_catalogue(),
        heartbeat_time=NOW,
        generation=generation,
        agent_version="bench",
    )
    return {**new_gpunode(name), "status": status}


def timed(action: Callable[[int], object], count: int) -> list[float]:
    """Seconds per call of ``action(i)`` for i in range(count), GC paused so it doesn't blur them."""
    samples = []
    gc.disable()
    try:
        for i in range(count):
            started = time.perf_counter()
            action(i)
            samples.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return samples


def row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    mean = statistics.fmean(ordered)
    p50 = ordered[len(ordered) // 2]
    return f"{name:<34}{len(samples):>8}{mean * 1e6:>12.1f}{p50 * 1e6:>12.1f}{p99 * 1e6:>12.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    names = [f"gpu-{i:05d}" for i in range(args.nodes)]
    objects = [node_object(name, 1) for name in names]
    updates = [node_object(names[(i * 7919) % len(names)], 2 + i) for i in range(args.updates)]

    cache = InventoryCache(catalogue=builtin_catalogue(), wall_clock=lambda: NOW)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache.replace_gpunodes(objects)
    cache.replace_pods([])
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    apply = timed(lambda i: cache.apply_gpunode("MODIFIED", updates[i]), len(updates))
    update_then_snapshot = timed(
        lambda i: (cache.apply_gpunode("MODIFIED", updates[i]), cache.snapshot()), len(updates)
    )
    snapshot_after_update = [b - a for a, b in zip(apply, update_then_snapshot, strict=True)]
    reused = timed(lambda i: cache.snapshot(), len(updates))
    judge_all = []
    for i in range(5):
        cache.apply_gpunode("MODIFIED", updates[i])  # a changed cache: a new snapshot, nothing memoized
        fresh = cache.snapshot()
        judge_all += timed(lambda _, fresh=fresh: [fresh.capacity(NodeName(n)) for n in names], 1)
    # The extender's hot path: a node's interned shape and heartbeat, looked up by name.
    snapshot = cache.snapshot()
    shapes = timed(lambda i: [snapshot.states.get(NodeName(n)) for n in names], 5)

    print(f"inventory cache: {args.nodes} nodes x {len(LAYOUTS)} GPUs (mixed MIG), {args.updates} updates")
    print(f"{'operation':<34}{'count':>8}{'mean us':>12}{'p50 us':>12}{'p99 us':>12}")
    print(row("apply one GpuNode update", apply))
    print(row("snapshot right after an update", snapshot_after_update))
    print(row("snapshot, nothing changed", reused))
    print(row(f"capacity view of all {args.nodes} nodes", judge_all))
    print(row(f"shape lookup of all {args.nodes} nodes", shapes))
    print(f"memory held by the cache: {held / 1e6:.1f} MB, {held / args.nodes / 1024:.1f} KiB per node")
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")


if __name__ == "__main__":
    main()
