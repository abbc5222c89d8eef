"""Feed an :class:`InventoryCache` from the cluster: one list-then-watch thread per kind of object."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from inventory.cache import InventoryCache
from inventory.kube import KubeClient, WatchEvent
from inventory.reflector import Reflector


def start_watches(
    kube: KubeClient, cache: InventoryCache, stop: threading.Event, *, watch_timeout_seconds: int = 300
) -> list[Reflector]:
    """GpuNodes (what each node has), pods (what is held) and nodes (MIG manager state), each
    reflected into ``cache`` on a daemon thread until ``stop`` is set (a thread notices at the end
    of its current watch, at most ``watch_timeout_seconds`` later)."""
    watched = (
        ("gpunodes", kube.list_gpunodes, kube.watch_gpunodes, cache.replace_gpunodes, cache.apply_gpunode),
        ("pods", kube.list_pods, kube.watch_pods, cache.replace_pods, cache.apply_pod),
        ("nodes", kube.list_nodes, kube.watch_nodes, cache.replace_nodes, cache.apply_node),
    )
    reflectors = []
    for name, list_fn, watch_fn, on_replace, apply in watched:
        reflector = Reflector(
            name=name,
            list_fn=list_fn,
            watch_fn=watch_fn,
            on_replace=on_replace,
            on_event=_applying(apply),
            watch_timeout_seconds=watch_timeout_seconds,
            logger=logging.getLogger(f"kgm.reflector.{name}"),
        )
        threading.Thread(target=reflector.run, args=(stop,), name=f"reflector-{name}", daemon=True).start()
        reflectors.append(reflector)
    return reflectors


def _applying(apply: Callable[[str, dict[str, Any]], None]) -> Callable[[WatchEvent], None]:
    def on_event(event: WatchEvent) -> None:
        apply(event.type, event.object)

    return on_event
