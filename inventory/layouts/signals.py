"""What the MIG planner learns from the pod and node watches: pods waiting for GPUs, the recent mix
of GPU requests, and each node's MIG manager labels.

Fed by the same reflectors as the inventory cache (``cache_reflectors``' listeners); thread-safe: the
watch threads write, the planning loop reads copies.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.domain.labels import MIG_CHANGED_AT, MIG_CONFIG_LABEL, MIG_CONFIG_STATE_LABEL
from inventory.domain.mig_inputs import pod_gpus, waiting_gpus
from inventory.domain.mig_plan import MigDemand
from inventory.domain.model import NodeName
from inventory.domain.times import parse_time


@dataclass(frozen=True, slots=True)
class MigLabels:
    """A node's MIG manager labels: the config asked for and the manager's state."""

    config: str | None = None
    state: str | None = None
    #: When kgm last asked for a new layout of the node (its annotation), if it did.
    changed_at: datetime | None = None


class WorkloadSignals:
    def __init__(self, *, recent_pods: int = 200) -> None:
        """``recent_pods``: how many of the last GPU pods seen make the recent mix."""
        self._lock = threading.Lock()
        self._recent_pods = recent_pods
        self._waiting: dict[str, dict[str, int]] = {}
        self._recent: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._labels: dict[NodeName, MigLabels] = {}
        self._listed: set[str] = set()

    @classmethod
    def without_watches(cls) -> WorkloadSignals:
        """Signals of a cluster that has no pods or nodes to watch (a cluster file): no demand."""
        signals = cls()
        signals.replace_pods([])
        signals.replace_nodes([])
        return signals

    def synced(self) -> bool:
        """Whether pods and nodes have been listed once: before that, a node mid-reconfiguration
        would look settled to the planner."""
        with self._lock:
            return {"pods", "nodes"} <= self._listed

    # -- Pods (a listener of the pod watch) -------------------------------------------------------

    def replace_pods(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        pods = list(items)
        # Oldest first, so that the newest stay when the window is full.
        pods.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        with self._lock:
            self._waiting = {}
            for pod in pods:
                self._apply(pod)
            self._listed.add("pods")

    def apply_pod(self, event_type: str, obj: Mapping[str, Any]) -> None:
        with self._lock:
            if event_type == "DELETED":
                self._waiting.pop(_uid(obj), None)
            else:
                self._apply(obj)

    def _apply(self, pod: Mapping[str, Any]) -> None:
        uid = _uid(pod)
        waiting = waiting_gpus(pod)
        if waiting:
            self._waiting[uid] = waiting
        else:
            self._waiting.pop(uid, None)
        if uid not in self._recent:
            wanted = pod_gpus(pod)
            if wanted:
                self._recent[uid] = wanted
                while len(self._recent) > self._recent_pods:
                    self._recent.popitem(last=False)

    def demand(self) -> MigDemand:
        """Units waited for, and units asked for by the recent GPU pods, by resource."""
        with self._lock:
            waiting, recent = Counter[str](), Counter[str]()
            for resources in self._waiting.values():
                waiting.update(resources)
            for resources in self._recent.values():
                recent.update(resources)
        return MigDemand(waiting=dict(waiting), recent=dict(recent))

    # -- Nodes (a listener of the node watch) ------------------------------------------------------

    def replace_nodes(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        labels = {NodeName(str(n["metadata"]["name"])): _labels(n) for n in items}
        with self._lock:
            self._labels = labels
            self._listed.add("nodes")

    def apply_node(self, event_type: str, obj: Mapping[str, Any]) -> None:
        name = NodeName(str(obj["metadata"]["name"]))
        with self._lock:
            if event_type == "DELETED":
                self._labels.pop(name, None)
            else:
                self._labels[name] = _labels(obj)

    def labels(self) -> dict[NodeName, MigLabels]:
        with self._lock:
            return dict(self._labels)


def _uid(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}")


def _labels(node: Mapping[str, Any]) -> MigLabels:
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    config, state = labels.get(MIG_CONFIG_LABEL), labels.get(MIG_CONFIG_STATE_LABEL)
    return MigLabels(
        config=str(config) if config is not None else None,
        state=str(state) if state is not None else None,
        changed_at=parse_time((metadata.get("annotations") or {}).get(MIG_CHANGED_AT)),
    )
