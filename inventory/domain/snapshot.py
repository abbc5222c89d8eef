"""What the live inventory holds, as plain data: a node's last GpuNode report, the GPU pods bound to
it, the allocations assumed between bind and the watch, and the immutable snapshot readers take.

``inventory.live.cache.InventoryCache`` keeps these up to date; everything that reads the inventory
(extender, webhook offer, REST API, cost, watchdog) reads an :class:`InventorySnapshot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from inventory.domain.gpunode import ParsedGpuNode
from inventory.domain.model import NodeName
from inventory.domain.pods import TERMINAL_PHASES, container_gpus, pod_gpu_total
from inventory.domain.shape import NodeCapacity, NodeShape


@dataclass(frozen=True, slots=True)
class CacheSettings:
    stale_after_s: float = 90.0
    """A node whose agent has not written for this long is not trusted (3 missed 30 s heartbeats)."""

    assume_ttl_s: float = 120.0
    """How long a bind's assumed allocation holds room if the pod never shows up bound."""

    hot_celsius: int = 80
    """A GPU at or above this makes its node 'hot' (placement prefers other nodes: it throttles soon)."""


@dataclass(frozen=True, slots=True)
class PodAllocation:
    """GPU resources a bound, non-terminal pod holds on its node."""

    uid: str
    namespace: str
    name: str
    node: NodeName
    resources: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class AssumedAllocation:
    uid: str
    node: NodeName
    resources: Mapping[str, int]
    expires_at: float


@dataclass(frozen=True, slots=True)
class NodeRecord:
    gpunode: ParsedGpuNode
    #: Monotonic time at which the current heartbeat generation was first seen by this cache.
    seen_at: float


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node in a snapshot: its interned shape and when its current heartbeat was first seen."""

    shape: NodeShape
    shape_id: int
    seen_at: float


@dataclass(frozen=True)
class InventorySnapshot:
    """An immutable view of the cache at ``taken_at`` (monotonic seconds)."""

    nodes: Mapping[NodeName, NodeRecord]
    states: Mapping[NodeName, NodeState]
    #: GPU resources held (bound or assumed) across the cluster, by resource name.
    allocated_total: Mapping[str, int]
    taken_at: float
    settings: CacheSettings
    synced: bool
    #: Changes when shape ids are renumbered: memos keyed by shape id must be dropped then.
    shape_epoch: int = 0
    #: The cache's change count when taken: ``InventoryCache.changed_since(version)`` names the nodes
    #: changed after it.
    version: int = 0

    def age(self, name: NodeName) -> float:
        return max(0.0, self.taken_at - self.states[name].seen_at)

    def stale_reason(self, state: NodeState) -> str | None:
        age = self.taken_at - state.seen_at
        if age > self.settings.stale_after_s:
            return f"inventory stale for {age:.0f} s (limit {self.settings.stale_after_s:.0f} s)"
        return None

    def capacity(self, name: NodeName) -> NodeCapacity:
        """The node's free capacity and whether it may take pods (KeyError for an unknown node)."""
        state = self.states[name]
        return NodeCapacity(
            name=name,
            shape=state.shape,
            shape_id=state.shape_id,
            age_s=self.age(name),
            reason=self.stale_reason(state),
        )


def pod_allocation(pod: Mapping[str, Any]) -> PodAllocation | None:
    """The GPU allocation a pod object stands for, or None (unbound, terminal, or no GPUs)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    phase = (pod.get("status") or {}).get("phase")
    if not node or phase in TERMINAL_PHASES:
        return None
    resources = pod_gpu_total(container_gpus(pod))
    if not resources:
        return None
    metadata = pod.get("metadata") or {}
    return PodAllocation(
        uid=str(metadata.get("uid", "")),
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        node=NodeName(str(node)),
        resources=MappingProxyType(resources),
    )
