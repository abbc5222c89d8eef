"""Small hand-made clusters for the extender's tests, as caches (the standalone path)."""

from __future__ import annotations

from typing import Any

from extender.bind import InMemoryBinder
from extender.gpu_extender import GpuExtender
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.prices import PriceTable
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of


def cache(nodes: list[dict[str, Any]]) -> InventoryCache:
    return cache_of(parse_cluster({"nodes": nodes}))


def extender(nodes: list[dict[str, Any]]) -> tuple[GpuExtender, InventoryCache]:
    c = cache(nodes)
    return GpuExtender(cache=c, binder=InMemoryBinder(c), prices=PriceTable()), c


def node(name: str, model: str = "H100-80GB", count: int = 1, mig: list[str] | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {"model": model, "count": count}
    if mig:
        group["mig"] = mig
    return {"name": name, "gpus": [group]}


def gpu_pod(
    uid: str,
    resources: dict[str, str],
    *,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": "x", "resources": {"limits": resources, "requests": resources}}]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"uid": uid, "name": f"pod-{uid}", "namespace": "ml", "annotations": annotations or {}},
        "spec": spec,
        "status": {"phase": "Pending"},
    }
