"""MIG layouts in `kgm simulate --sharing mig`: what each GPU is carved into, what each instance
holds, and the planner's changes applied the way NVIDIA's MIG manager applies them.

The cache only counts allocations per node and resource; which GPU an instance sits on is the
device plugin's choice. Here the simulated device plugin takes the free device of the lowest GPU
index (the kubelet's order), and this module remembers it, so the planner knows which instances are
held. A change marks the node ``nvidia.com/mig.config.state=pending`` (the extender keeps MIG pods
off it, as in a real cluster) and publishes only the instances that survive it; after the
reconfiguration time the node reports the new layout and ``success``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inventory.domain.catalogue import GpuModel
from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.labels import FULL_GPU_RESOURCE, MIG_CONFIG_STATE_LABEL
from inventory.domain.mig_candidates import Layout, describe
from inventory.domain.mig_layout import MigInstance
from inventory.domain.mig_plan import (
    GpuPlanState,
    MigDemand,
    MigPlan,
    NodePlanState,
    PlanSettings,
    plan_layouts,
)
from inventory.domain.model import ClusterInventory, GpuDevice, NodeInventory, NodeName
from inventory.live.cache import InventoryCache
from inventory.node.fake_gpu import FakeGpuSource


@dataclass
class _Gpu:
    index: int
    model: GpuModel
    #: The layout the GPU has, or is being given.
    layout: Layout
    #: What the node reports now (the survivors of a change under way).
    shown: Layout
    held: set[int] = field(default_factory=set)
    whole_held: bool = False


@dataclass
class _Node:
    name: NodeName
    labels: Mapping[str, str]
    gpus: list[_Gpu]
    generation: int = 1
    last_changed_s: float | None = None
    ready_at_s: float | None = None


class SimLayouts:
    """The cluster's MIG layouts through a run, and the planner that changes them."""

    def __init__(
        self,
        cluster: ClusterInventory,
        cache: InventoryCache,
        *,
        settings: PlanSettings,
        reconfigure_s: float,
        heartbeat: datetime,
        recent_window: int = 200,
        allocatable: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        """``recent_window``: how many of the last admitted pods make the recent mix;
        ``allocatable``: per node (CPU milli, memory MiB), kept in the Node objects published."""
        self._allocatable = dict(allocatable or {})
        self._cluster = cluster
        self._cache = cache
        self._settings = settings
        self._reconfigure_s = reconfigure_s
        self._heartbeat = heartbeat
        self._recent: deque[Mapping[str, int]] = deque(maxlen=recent_window)
        self._nodes = {
            node.name: _Node(
                name=node.name,
                labels=node.labels,
                gpus=[
                    _Gpu(g.index, g.model, _layout_of(g), _layout_of(g), whole_held=False) for g in node.gpus
                ],
            )
            for node in cluster.nodes
        }
        self.changes = 0
        self.reasons: list[str] = []

    # -- What pods take ----------------------------------------------------------------------------

    def requested(self, resources: Mapping[str, int]) -> None:
        """An admitted pod's resources: the recent mix the planner shapes free capacity after."""
        self._recent.append(dict(resources))

    def bound(self, node: str, resources: Mapping[str, int]) -> None:
        """The device plugin's choice for a pod bound to ``node``: the lowest free devices."""
        gpus = self._nodes[NodeName(node)].gpus
        for resource, count in resources.items():
            for _ in range(count):
                gpu = next(g for g in gpus if _has_free(g, resource))
                if resource == FULL_GPU_RESOURCE:
                    gpu.whole_held = True
                else:
                    free = (i for i in _free_instances(gpu) if i.profile.resource_name == resource)
                    gpu.held.add(next(free).start)

    # -- Layouts -----------------------------------------------------------------------------------

    def finish(self, now_s: float) -> None:
        """Changes whose reconfiguration time has passed: the node reports its new layout."""
        for node in self._nodes.values():
            if node.ready_at_s is not None and node.ready_at_s <= now_s:
                node.ready_at_s = None
                for gpu in node.gpus:
                    gpu.shown = gpu.layout
                self._publish(node, state="success")

    def plan(self, now_s: float, waiting: Mapping[str, int]) -> MigPlan:
        """One planning round, applied at once (the nodes start reconfiguring)."""
        recent = Counter[str]()
        for resources in self._recent:
            recent.update(resources)
        plan = plan_layouts(
            [self._plan_state(node, now_s) for node in self._nodes.values()],
            MigDemand(waiting=dict(waiting), recent=dict(recent)),
            now_s=now_s,
            settings=self._settings,
        )
        touched: set[NodeName] = set()
        for change in plan.changes:
            node = self._nodes[change.node]
            gpu = node.gpus[change.gpu]
            survivors = {(i.profile.name, i.start) for i in change.after or ()}
            gpu.shown = tuple(i for i in gpu.layout or () if (i.profile.name, i.start) in survivors)
            gpu.layout = change.after
            touched.add(node.name)
            self.reasons.append(change.reason)
        self.changes += len(plan.changes)
        for name in touched:
            node = self._nodes[name]
            node.last_changed_s = now_s
            node.ready_at_s = now_s + self._reconfigure_s
            self._publish(node, state="pending")
        return plan

    def _plan_state(self, node: _Node, now_s: float) -> NodePlanState:
        return NodePlanState(
            name=node.name,
            gpus=tuple(
                GpuPlanState(
                    index=g.index,
                    model=g.model,
                    layout=g.layout,
                    held_starts=frozenset(g.held),
                    whole_held=g.whole_held,
                )
                for g in node.gpus
            ),
            last_changed_s=node.last_changed_s,
            reconfiguring=node.ready_at_s is not None and node.ready_at_s > now_s,
        )

    def _publish(self, node: _Node, *, state: str) -> None:
        node.generation += 1
        inventory = NodeInventory(
            name=node.name,
            labels=node.labels,
            gpus=tuple(
                GpuDevice(
                    index=g.index,
                    model=g.model,
                    mig_enabled=g.shown is not None,
                    mig_instances=g.shown or (),
                )
                for g in node.gpus
            ),
        )
        host = FakeGpuSource.from_node(inventory).read()
        status = build_status(
            node_name=node.name,
            host=host,
            health={gpu.uuid: GpuHealth(healthy=True) for gpu in host.gpus},
            assignments=None,
            catalogue=self._cluster.catalogue,
            heartbeat_time=self._heartbeat,
            generation=node.generation,
            agent_version="simulated",
        )
        # The MIG manager's label first, then the agent's report, as a cluster sees them: the cache
        # counts a reconfigured node's MIG instances only from the first report after ``success``.
        labels = {MIG_CONFIG_STATE_LABEL: state}
        self._cache.apply_node("MODIFIED", node_object(node.name, self._allocatable, labels))
        self._cache.apply_gpunode("MODIFIED", {**new_gpunode(node.name), "status": status})

    # -- Readings ----------------------------------------------------------------------------------

    def mig_gpus(self) -> int:
        return sum(1 for n in self._nodes.values() for g in n.gpus if g.layout is not None)

    def layouts(self) -> dict[str, int]:
        """How many GPUs have each layout (for the report)."""
        return dict(Counter(describe(g.layout) for n in self._nodes.values() for g in n.gpus).most_common())


def node_object(
    name: str, allocatable: Mapping[str, tuple[int, int]], labels: Mapping[str, str]
) -> dict[str, Any]:
    """A Node object as the cache's node watch reads it: labels, and allocatable where known."""
    node: dict[str, Any] = {"metadata": {"name": name, "labels": dict(labels)}}
    if name in allocatable:
        cpu, memory = allocatable[name]
        node["status"] = {"allocatable": {"cpu": f"{cpu}m", "memory": f"{memory}Mi"}}
    return node


def _layout_of(gpu: GpuDevice) -> Layout:
    return tuple(sorted(gpu.mig_instances, key=lambda i: i.start)) if gpu.mig_enabled else None


def _free_instances(gpu: _Gpu) -> list[MigInstance]:
    return [i for i in gpu.shown or () if i.start not in gpu.held]


def _has_free(gpu: _Gpu, resource: str) -> bool:
    if resource == FULL_GPU_RESOURCE:
        return gpu.shown is None and not gpu.whole_held
    return any(i.profile.resource_name == resource for i in _free_instances(gpu))
