"""Feed an :class:`InventoryCache` from the cluster: one list-then-watch loop per kind of object."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from inventory.kube import KubeClient, WatchEvent
from inventory.live.cache import InventoryCache
from inventory.live.reflector import Reflector

PodListener = tuple[Callable[[list[dict[str, Any]], str], object], Callable[[str, dict[str, Any]], None]]


def cache_reflectors(
    kube: KubeClient,
    cache: InventoryCache,
    *,
    watch_timeout_seconds: int = 300,
    pod_listeners: Sequence[PodListener] = (),
    node_listeners: Sequence[PodListener] = (),
) -> list[Reflector]:
    """GpuNodes (what each node has), pods (what is held) and nodes (MIG manager state), each
    reflected into ``cache`` by the :meth:`Reflector.run` loop that the caller runs on a thread of its
    own (none is started here); a loop notices its ``stop`` at the end of its current watch, at most
    ``watch_timeout_seconds`` later. ``pod_listeners`` (the reconciler) get the pod relists and events
    too, after the cache: one watch serves both; ``node_listeners`` (the MIG planner) likewise get
    the nodes'."""
    replace_pods, apply_pod = _fan_out([(cache.replace_pods, cache.apply_pod), *pod_listeners])
    replace_nodes, apply_node = _fan_out([(cache.replace_nodes, cache.apply_node), *node_listeners])
    watched = (
        ("gpunodes", kube.list_gpunodes, kube.watch_gpunodes, cache.replace_gpunodes, cache.apply_gpunode),
        ("pods", kube.list_pods, kube.watch_pods, replace_pods, apply_pod),
        ("nodes", kube.list_nodes, kube.watch_nodes, replace_nodes, apply_node),
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
        reflectors.append(reflector)
    return reflectors


def _fan_out(
    listeners: Sequence[PodListener],
) -> tuple[Callable[[list[dict[str, Any]], str], None], Callable[[str, dict[str, Any]], None]]:
    def replace(items: list[dict[str, Any]], resource_version: str) -> None:
        for on_replace, _ in listeners:
            on_replace(items, resource_version)

    def apply(event_type: str, obj: dict[str, Any]) -> None:
        for _, on_event in listeners:
            on_event(event_type, obj)

    return replace, apply


def _applying(apply: Callable[[str, dict[str, Any]], None]) -> Callable[[WatchEvent], None]:
    def on_event(event: WatchEvent) -> None:
        apply(event.type, event.object)

    return on_event
