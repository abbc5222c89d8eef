"""The cache puts a node's CPU and memory in its shape: allocatable from the Node, minus bound pods."""

from __future__ import annotations

from typing import Any

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.model import NodeName
from inventory.domain.shape import NodeRoom
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of


def room(cache: InventoryCache) -> NodeRoom | None:
    return cache.snapshot().states[NodeName("n")].shape.room


def pod(uid: str, cpu: str, memory: str, *, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": uid, "namespace": "ns"},
        "spec": {
            "nodeName": "n",
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        },
        "status": {"phase": phase},
    }


def test_room_follows_the_node_and_its_pods() -> None:
    cache = cache_of(parse_cluster({"nodes": [{"name": "n", "gpus": [{"model": "H100-80GB", "count": 8}]}]}))
    assert room(cache) is None  # a cluster file says nothing about CPU
    node = {"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "96", "memory": "1000Gi"}}}
    cache.apply_node("ADDED", node)
    assert room(cache) == NodeRoom(96000, 1024000, 96000, 1024000)
    cache.apply_pod("ADDED", pod("a", "10", "100Gi"))  # a CPU-only pod takes room too
    cache.apply_pod("ADDED", pod("b", "2", "1Gi"))
    assert room(cache) == NodeRoom(96000, 1024000, 84000, 1024000 - 101 * 1024)
    cache.apply_pod("MODIFIED", pod("a", "10", "100Gi", phase="Succeeded"))
    cache.apply_pod("DELETED", pod("b", "2", "1Gi"))
    assert room(cache) == NodeRoom(96000, 1024000, 96000, 1024000)
    cache.replace_nodes([])
    assert room(cache) is None


def test_a_relist_of_pods_recounts_the_requests() -> None:
    cache = cache_of(parse_cluster({"nodes": [{"name": "n", "gpus": [{"model": "H100-80GB", "count": 1}]}]}))
    cache.replace_nodes(
        [{"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "8", "memory": "8Gi"}}}]
    )
    cache.apply_pod("ADDED", pod("gone", "4", "1Gi"))
    cache.replace_pods([pod("kept", "1", "1Gi")])
    assert room(cache) == NodeRoom(8000, 8192, 7000, 7168)
