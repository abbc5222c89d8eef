"""A cache filled once from a cluster description: standalone mode (`kgm serve --inventory FILE`)
judges nodes through the same cache, snapshots and assumed allocations as a live cluster."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.model import ClusterInventory
from inventory.domain.snapshot import CacheSettings
from inventory.live.cache import InventoryCache
from inventory.node.fake_gpu import FakeGpuSource


def cache_of(cluster: ClusterInventory, *, assume_ttl_s: float = 120.0) -> InventoryCache:
    """Every node as its agent would publish it, healthy, never stale (nothing heartbeats here)."""
    now = datetime.now(UTC)
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
        objects.append({**new_gpunode(node.name), "status": status})
    cache.replace_gpunodes(objects)
    cache.replace_pods([])
    cache.replace_nodes([])
    return cache
