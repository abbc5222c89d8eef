"""A cache filled once from a cluster description: standalone mode (`kgm serve --inventory FILE`)
judges nodes through the same cache, snapshots and assumed allocations as a live cluster."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.model import ClusterInventory
from inventory.domain.snapshot import CacheSettings
from inventory.domain.times import format_time
from inventory.live.cache import InventoryCache
from inventory.node.fake_gpu import FakeGpuSource


def cache_of(
    cluster: ClusterInventory,
    *,
    assume_ttl_s: float = 120.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> InventoryCache:
    """Every node as its agent would publish it, healthy, never stale (nothing heartbeats here), its
    GpuNode created now: kgm first sees these GPUs when it loads the description, and counts their
    capacity (idle cost) from then."""
    now = clock()
    cache = InventoryCache(
        catalogue=cluster.catalogue,
        settings=CacheSettings(stale_after_s=math.inf, assume_ttl_s=assume_ttl_s),
        wall_clock=lambda: now,
    )
    objects = []
    for node in cluster.nodes:
        host = FakeGpuSource.from_node(node).read()
        status = build_status(
            node_name=node.name,
            host=host,
            health={gpu.uuid: GpuHealth(healthy=True) for gpu in host.gpus},
            assignments=None,
            catalogue=cluster.catalogue,
            heartbeat_time=now,
            generation=1,
            agent_version="static",
        )
        gpunode = new_gpunode(node.name)
        gpunode["metadata"]["creationTimestamp"] = format_time(now)
        objects.append({**gpunode, "status": status})
    cache.replace_gpunodes(objects)
    cache.replace_pods([])
    cache.replace_nodes([])
    return cache
