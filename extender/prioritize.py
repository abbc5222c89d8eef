"""Prioritize: a 0..10 score per feasible node, by a placement policy chosen per pod.

Each policy gives a raw number per node (higher is better); raw numbers are scaled to 0..10 over
the candidates (the best gets 10, the worst 0, all equal all 10), then hot GPUs lose points. Same
inputs, same scores: no randomness, no dependence on the order of the candidates.

``fragmentation`` (the default) follows "Beware of Fragmentation" (Weng et al., USENIX ATC'23):
a node's fragmentation for a request type is the free GPU capacity that type cannot use there, and
the node's fragmentation is its expectation over the typical workload. The pod goes where that
expectation grows least. Units are GPUs: a whole GPU is 1, a MIG instance its share of compute
slices, so MIG slices and whole GPUs are weighed alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from extender.demand import GpuDemand
from extender.service import HostScore
from inventory.cache import InventorySnapshot, NodeCapacity, NodeRecord
from inventory.catalogue import FULL_GPU_RESOURCE
from inventory.model import NodeName
from inventory.prices import PriceTable

POLICIES = ("fragmentation", "binpack", "spread", "cost")
MAX_SCORE = 10

#: A request type of the typical workload: (resource name, count).
RequestType = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PrioritySettings:
    default_policy: str = "fragmentation"
    """Policy for pods without ``gpu.kgm.io/placement-policy``."""

    hot_celsius: int = 80
    """A node with a GPU at or above this loses ``hot_penalty`` points: it will throttle soon."""

    hot_penalty: int = 3

    workload: Mapping[RequestType, float] | None = None
    """Popularity of request types for ``fragmentation``; None: learned from what is allocated now."""


def prioritize(
    demand: GpuDemand,
    node_names: Sequence[str],
    snapshot: InventorySnapshot,
    prices: PriceTable,
    settings: PrioritySettings,
) -> list[HostScore]:
    names = [NodeName(n) for n in node_names if NodeName(n) in snapshot.nodes]
    policy = demand.policy if demand.policy in POLICIES else settings.default_policy
    if not demand.wants_gpus:
        raw = {name: 0.0 for name in names}
    elif policy == "fragmentation":
        workload = settings.workload or learned_workload(snapshot)
        raw = {
            n: -fragmentation_growth(demand, snapshot.capacity(n), snapshot.nodes[n], workload) for n in names
        }
    elif policy == "cost":
        raw = {n: -float(node_cost(demand, snapshot.nodes[n], prices)) for n in names}
    else:
        used = {n: utilization_after(demand, snapshot.capacity(n)) for n in names}
        raw = used if policy == "binpack" else {n: -u for n, u in used.items()}
    scaled = _scale(raw)
    scores = []
    for name in node_names:
        score = scaled.get(NodeName(name), 0)
        record = snapshot.nodes.get(NodeName(name))
        if record is not None and _hottest(record) >= settings.hot_celsius:
            score = max(0, score - settings.hot_penalty)
        scores.append(HostScore(host=name, score=score))
    return scores


def _scale(raw: Mapping[NodeName, float]) -> dict[NodeName, int]:
    if not raw:
        return {}
    low, high = min(raw.values()), max(raw.values())
    if high - low < 1e-9:
        return {name: MAX_SCORE for name in raw}
    return {name: round(MAX_SCORE * (value - low) / (high - low)) for name, value in raw.items()}


def _hottest(record: NodeRecord) -> int:
    return max((g.temperature_c or 0 for g in record.gpunode.inventory.gpus), default=0)


# -- binpack / spread ------------------------------------------------------------------------------


def utilization_after(demand: GpuDemand, capacity: NodeCapacity) -> float:
    """Share of the node's capacity of the requested kinds in use once the pod is placed (0..1)."""
    shares = []
    for resource, count in demand.resources.items():
        total, free = _total_free(capacity, resource)
        if total:
            shares.append((total - free + count) / total)
    return sum(shares) / len(shares) if shares else 0.0


def _total_free(capacity: NodeCapacity, resource: str) -> tuple[int, int]:
    if resource == FULL_GPU_RESOURCE:
        return capacity.full_gpus_total, capacity.full_gpus_free
    return capacity.mig_total.get(resource, 0), capacity.mig_free.get(resource, 0)


# -- cost ------------------------------------------------------------------------------------------


def node_cost(demand: GpuDemand, record: NodeRecord, prices: PriceTable) -> Decimal:
    """Hourly price of what the pod takes on this node (a model without a price counts as dear)."""
    total = Decimal(0)
    gpus = record.gpunode.inventory.gpus
    for resource, count in demand.resources.items():
        unit = None
        for gpu in gpus:
            price = prices.hourly.get(gpu.model.name)
            if price is None:
                continue
            if resource == FULL_GPU_RESOURCE and not gpu.mig_enabled:
                unit = price
            for instance in gpu.mig_instances:
                if instance.profile.resource_name == resource:
                    unit = prices.mig_instance(gpu.model, instance.profile)
            if unit is not None:
                break
        total += (unit if unit is not None else Decimal(10**6)) * count
    return total


# -- fragmentation ---------------------------------------------------------------------------------

_WHOLE_GPU_COUNTS = ((1, 0.5), (2, 0.25), (4, 0.15), (8, 0.1))


def learned_workload(snapshot: InventorySnapshot) -> dict[RequestType, float]:
    """Request types weighted by what is allocated now across the cluster, plus one of each kind
    offered (so a kind nobody uses yet still counts). Whole-GPU requests are spread over 1, 2, 4
    and 8 GPUs, smaller ones likelier, as in the published GPU traces."""
    allocated: dict[str, float] = {}
    for held in snapshot.allocated.values():
        for resource, count in held.items():
            allocated[resource] = allocated.get(resource, 0) + count
    offered: set[str] = set()
    for name in snapshot.nodes:
        capacity = snapshot.capacity(name)
        offered.update(capacity.mig_total)
        if capacity.full_gpus_total:
            offered.add(FULL_GPU_RESOURCE)
    workload: dict[RequestType, float] = {}
    for resource in offered | set(allocated):
        weight = allocated.get(resource, 0) + 1
        if resource == FULL_GPU_RESOURCE:
            for count, share in _WHOLE_GPU_COUNTS:
                workload[(resource, count)] = weight * share
        else:
            workload[(resource, 1)] = weight
    total = sum(workload.values()) or 1.0
    return {kind: weight / total for kind, weight in workload.items()}


def fragmentation_growth(
    demand: GpuDemand, capacity: NodeCapacity, record: NodeRecord, workload: Mapping[RequestType, float]
) -> float:
    """How much the node's expected fragmentation grows if the pod is placed there (in GPUs)."""
    share = _mig_shares(record)
    before = _free(capacity)
    after = dict(before)
    for resource, count in demand.resources.items():
        after[resource] = after.get(resource, 0) - count
    return _fragmentation(after, share, workload) - _fragmentation(before, share, workload)


def _free(capacity: NodeCapacity) -> dict[str, int]:
    return {FULL_GPU_RESOURCE: capacity.full_gpus_free, **capacity.mig_free}


def _mig_shares(record: NodeRecord) -> dict[str, float]:
    shares = {FULL_GPU_RESOURCE: 1.0}
    for gpu in record.gpunode.inventory.gpus:
        for instance in gpu.mig_instances:
            total = gpu.model.compute_slices_total or 1
            shares[instance.profile.resource_name] = instance.profile.compute_slices / total
    return shares


def _fragmentation(
    free: Mapping[str, int], share: Mapping[str, float], workload: Mapping[RequestType, float]
) -> float:
    capacity = sum(max(0, n) * share.get(r, 1.0) for r, n in free.items())
    expected = 0.0
    for (resource, count), popularity in workload.items():
        available = max(0, free.get(resource, 0))
        usable = available * share.get(resource, 1.0) if available >= count else 0.0
        expected += popularity * (capacity - usable)
    return expected
