"""A node's shape: everything placement decides on, apart from how old the inventory is.

Two nodes with equal shapes get equal verdicts and scores for any pod, so the extender judges each
distinct shape once per kind of pod rather than each node: a 5,000-node cluster has a few hundred
shapes. The cache recomputes a node's shape only when that node changes (its GpuNode, the pods on
it, its MIG manager state) and interns it to a small integer id that never changes meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from inventory.domain.labels import FULL_GPU_RESOURCE, MIG_CONFIG_STATE_LABEL
from inventory.domain.model import GpuDevice, NodeName

#: States of NVIDIA's MIG manager in which the node's MIG layout cannot be trusted.
MIG_UNSETTLED_STATES = frozenset({"pending", "rebooting", "failed"})
#: Not a MIG manager state: it reported ``success`` after a reconfiguration, and the node agent has
#: not published the new layout yet, so what the inventory says about MIG instances is the old layout.
MIG_AWAITING_REPORT = "awaiting-report"


@dataclass(frozen=True, slots=True)
class NodeRoom:
    """A node's CPU and memory: allocatable (its Node object) and what the requests of the pods
    bound there leave. The placement policy counts the GPU that CPU and memory cannot feed."""

    cpu_milli: int
    memory_mib: int
    cpu_free_milli: int
    memory_free_mib: int


@dataclass(frozen=True, slots=True)
class NodeShape:
    full_gpus_total: int
    full_gpus_free: int
    mig_total: tuple[tuple[str, int], ...]
    mig_free: tuple[tuple[str, int], ...]
    #: Per healthy whole GPU: its memory in GB.
    full_gpu_memory_gb: tuple[int, ...]
    #: Why MIG pods cannot land here now (MIG manager state), or None.
    mig_blocked: str | None
    #: Every name of every GPU model on the node, lower-cased (``nvidia.com/gpu.product`` matching).
    aliases: frozenset[str]
    models: tuple[str, ...]
    #: (resource, model name, share of a GPU): what each resource is, for cost and fragmentation.
    resources: tuple[tuple[str, str, float], ...]
    #: (GPU id, reason) of each unhealthy GPU, for messages.
    unhealthy: tuple[tuple[str, str], ...]
    #: A GPU at or above the hot threshold: it will throttle soon.
    hot: bool
    #: CPU and memory, where the node's Node object said (None: not known, e.g. a cluster file).
    #: No part of the shape's identity: they differ on nearly every node, and nodes share a shape
    #: to share verdicts and GPU scores; the placement policy adds their term per node.
    room: NodeRoom | None = field(default=None, compare=False)

    def free(self, resource: str) -> int:
        if resource == FULL_GPU_RESOURCE:
            return self.full_gpus_free
        return dict(self.mig_free).get(resource, 0)

    def total(self, resource: str) -> int:
        if resource == FULL_GPU_RESOURCE:
            return self.full_gpus_total
        return dict(self.mig_total).get(resource, 0)


def shape_of(
    gpus: tuple[GpuDevice, ...],
    allocated: Mapping[str, int],
    mig_state: str | None,
    *,
    hot_celsius: int,
    room: NodeRoom | None = None,
) -> NodeShape:
    whole = [g for g in gpus if g.healthy and not g.mig_enabled]
    mig_total: dict[str, int] = {}
    resources: dict[str, tuple[str, float]] = {}
    for gpu in gpus:
        if not gpu.healthy:
            continue
        if not gpu.mig_enabled:
            resources.setdefault(FULL_GPU_RESOURCE, (gpu.model.name, 1.0))
            continue
        if gpu.mig_pending:
            continue  # a MIG mode change waits for a reset: its instances may vanish
        for instance in gpu.mig_instances:
            key = instance.profile.resource_name
            mig_total[key] = mig_total.get(key, 0) + 1
            share = instance.profile.compute_slices / (gpu.model.compute_slices_total or 1)
            resources.setdefault(key, (gpu.model.name, share))
    mig_free = {key: max(0, total - allocated.get(key, 0)) for key, total in mig_total.items()}
    blocked = None
    if mig_state in MIG_UNSETTLED_STATES:
        blocked = f"MIG reconfiguration {mig_state} ({MIG_CONFIG_STATE_LABEL}={mig_state})"
    elif mig_state == MIG_AWAITING_REPORT:
        blocked = "MIG reconfiguration done; waiting for the node agent to report the new layout"
    return NodeShape(
        full_gpus_total=len(whole),
        full_gpus_free=max(0, len(whole) - allocated.get(FULL_GPU_RESOURCE, 0)),
        mig_total=tuple(sorted(mig_total.items())),
        mig_free=tuple(sorted(mig_free.items())),
        full_gpu_memory_gb=tuple(g.model.memory_gb for g in whole),
        mig_blocked=blocked,
        aliases=frozenset(alias for g in gpus for alias in g.model.aliases),
        models=tuple(sorted({g.model.name for g in gpus})),
        resources=tuple(sorted((r, model, share) for r, (model, share) in resources.items())),
        unhealthy=tuple(
            (g.uuid or f"GPU {g.index}", g.unhealthy_reason or "unhealthy") for g in gpus if not g.healthy
        ),
        hot=any((g.temperature_c or 0) >= hot_celsius for g in gpus),
        room=room,
    )


def room_of(allocatable: tuple[int, int] | None, requested: tuple[int, int]) -> NodeRoom | None:
    """The node's room from its allocatable (CPU milli, memory MiB) and its pods' requests."""
    if allocatable is None:
        return None
    cpu, memory = allocatable
    return NodeRoom(cpu, memory, max(0, cpu - requested[0]), max(0, memory - requested[1]))


def node_allocatable(node: Mapping[str, Any]) -> tuple[int, int] | None:
    """(CPU milli, memory MiB) a Node object offers pods (``status.allocatable``), or None."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    if not isinstance(allocatable, Mapping) or "cpu" not in allocatable or "memory" not in allocatable:
        return None
    try:
        return int(quantity(allocatable["cpu"]) * 1000), int(quantity(allocatable["memory"]) / _MIB)
    except ValueError:
        return None


def pod_requests(pod: Mapping[str, Any]) -> tuple[int, int]:
    """(CPU milli, memory MiB) a pod requests: its containers' sum, or an init container's if larger
    (what the scheduler counts; pod overhead aside). Quantities that do not parse count 0."""
    spec = pod.get("spec") or {}

    def of(container: Any) -> tuple[float, float]:
        requests = ((container or {}).get("resources") or {}).get("requests") or {}
        if not isinstance(requests, Mapping):
            return 0.0, 0.0
        return _or_zero(requests.get("cpu")), _or_zero(requests.get("memory"))

    main = [of(c) for c in spec.get("containers") or []]
    init = [of(c) for c in spec.get("initContainers") or []]
    cpu = max([sum(c for c, _ in main), *(c for c, _ in init)])
    memory = max([sum(m for _, m in main), *(m for _, m in init)])
    return int(cpu * 1000), int(memory / _MIB)


_MIB = 1024 * 1024
_SUFFIXES = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity(value: object) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``4Gi``, ``1e3``) as a number; ValueError if not one."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def _or_zero(value: object) -> float:
    if value is None:
        return 0.0
    try:
        return max(0.0, quantity(value))
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """One node as readers see it at a moment: its shape and whether its inventory is fresh."""

    name: NodeName
    shape: NodeShape
    shape_id: int
    age_s: float
    #: Why the node takes no GPU pods at all (stale inventory), or None.
    reason: str | None

    @property
    def schedulable(self) -> bool:
        return self.reason is None

    @property
    def mig_reason(self) -> str | None:
        return self.reason or self.shape.mig_blocked

    @property
    def mig_schedulable(self) -> bool:
        return self.mig_reason is None

    @property
    def full_gpus_total(self) -> int:
        return self.shape.full_gpus_total

    @property
    def full_gpus_free(self) -> int:
        return self.shape.full_gpus_free

    @property
    def mig_total(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.shape.mig_total))

    @property
    def mig_free(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.shape.mig_free))
