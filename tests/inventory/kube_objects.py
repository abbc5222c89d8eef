"""Raw bodies (a GpuNode, a pod) and watch and list helpers shared by the Kubernetes adapter's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inventory.kube import Listing, WatchEvent


def gpunode(name: str, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "gpu.kgm.io/v1alpha1",
        "kind": "GpuNode",
        "metadata": {"name": name},
        "spec": {"nodeName": name},
    }
    return body | ({"status": status} if status else {})


def pod(name: str, namespace: str = "ml", node: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }


def take(events: Iterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The first ``count`` events of a watch, then the watch is closed (no waiting for its timeout)."""
    taken = [event for _, event in zip(range(count), events, strict=False)]
    events.close()  # type: ignore[attr-defined]
    return taken


def names(listing: Listing) -> list[str]:
    return sorted(item["metadata"]["name"] for item in listing.items)
