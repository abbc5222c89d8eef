"""Prioritize: a 0..10 score per feasible node, by a placement policy chosen per pod.

Each policy gives a raw number per node (higher is better); raw numbers are scaled to 0..10 over
the candidates (the best gets 10, the worst 0, all equal all 10), then hot GPUs lose points. Same
inputs, same scores: no randomness, no dependence on the order of the candidates.

``fragmentation`` (the default) is the one placement policy of ``inventory.domain.fragmentation``
(which ``kgm simulate`` runs too): a node's fragmentation for a request type is the free GPU
capacity that type cannot use there ("Beware of Fragmentation", Weng et al., USENIX ATC'23), its
expectation over the typical workload, plus the GPU the node's free CPU and memory cannot feed
(where the node's Node object gives them). The pod goes where that grows least. Units are GPUs: a
whole GPU is 1, a MIG instance its share of compute slices, so MIG slices and whole GPUs are
weighed alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from math import inf
from typing import Any, TypeVar

from inventory.domain.demand import GpuDemand
from inventory.domain.fragmentation import TaskType, frag_amount, stranded_gpu
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.domain.snapshot import InventorySnapshot

POLICIES = ("fragmentation", "binpack", "spread", "cost")
_K = TypeVar("_K")
MAX_SCORE = 10

#: A request type of the typical workload: (resource name, count).
RequestType = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PrioritySettings:
    default_policy: str = "fragmentation"
    """Policy for pods without ``gpu.kgm.io/placement-policy``."""

    hot_penalty: int = 3
    """Points a node loses when one of its GPUs is hot (``CacheSettings.hot_celsius``)."""

    workload: Mapping[RequestType, float] | None = None
    """Popularity of request types for ``fragmentation``; None: learned from what is allocated now."""

    feed: tuple[float, float] | None = None
    """(CPU milli, memory MiB) that a GPU's worth of the typical work requests, for ``fragmentation``'s
    stranded-GPU term; None: learned from the nodes that give their CPU and memory (``learned_feed``)."""


def prioritize(
    demand: GpuDemand,
    node_names: Sequence[str],
    snapshot: InventorySnapshot,
    prices: PriceTable,
    settings: PrioritySettings,
    memo: dict[int, float] | None = None,
) -> dict[str, int]:
    """Scores for ``node_names``. ``memo`` maps shape ids to raw scores for this pod kind and policy
    (nodes of one shape score alike; the memo is the caller's to keep while the workload holds).
    CPU and memory are no part of a shape (they differ on nearly every node): ``fragmentation``'s
    stranded-GPU term is added per node, a few operations each."""
    memo = {} if memo is None else memo
    policy, workload, feed = scoring_inputs(demand, snapshot, settings, memo)
    states = snapshot.states
    # Everything is decided per shape (few), then looked up per node (many).
    shape_of_node: list[tuple[str, int]] = []
    shapes: dict[int, NodeShape] = {}
    for name in node_names:
        state = states.get(name)  # type: ignore[call-overload]  # NodeName(name) per node costs time
        if state is None:
            shape_of_node.append((name, -1))
            continue
        shape_of_node.append((name, state.shape_id))
        shapes[state.shape_id] = state.shape
    raw = {}
    for shape_id, shape in shapes.items():
        value = memo.get(shape_id)
        if value is None:
            value = memo[shape_id] = raw_score(policy, demand, shape, prices, workload)
        raw[shape_id] = value
    if feed is not None and demand.wants_gpus:
        per_node = _with_room(demand, shape_of_node, states, raw, feed)
        if per_node is not None:
            return _scaled_per_node(per_node, states, settings.hot_penalty)
    scaled = _scale(raw)
    for shape_id, shape in shapes.items():
        if shape.hot:
            scaled[shape_id] = max(0, scaled[shape_id] - settings.hot_penalty)
    return {name: scaled.get(shape_id, 0) for name, shape_id in shape_of_node}


def scoring_inputs(
    demand: GpuDemand, snapshot: InventorySnapshot, settings: PrioritySettings, memo: dict[int, float]
) -> tuple[str, Mapping[RequestType, float], tuple[float, float] | None]:
    """The policy, the workload mix and the feed ratios a pod is scored with; the feed only where the
    stranded-GPU term applies (``fragmentation`` with nonzero ratios), else None."""
    policy = demand.policy if demand.policy in POLICIES else settings.default_policy
    workload = settings.workload or learned_workload(snapshot)
    feed = settings.feed
    if policy == "fragmentation" and feed is None:
        # The ratios the memo's scores were computed with live beside them: one memo never mixes two.
        if _FEED_KEYS[0] not in memo:
            memo[_FEED_KEYS[0]], memo[_FEED_KEYS[1]] = learned_feed(snapshot)
        feed = memo[_FEED_KEYS[0]], memo[_FEED_KEYS[1]]
    if policy != "fragmentation" or not feed or not any(feed):
        feed = None
    return policy, workload, feed


def _with_room(
    demand: GpuDemand,
    shape_of_node: Sequence[tuple[str, int]],
    states: Mapping[Any, Any],
    raw: Mapping[int, float],
    feed: tuple[float, float],
) -> dict[str, float] | None:
    """Per node, the shape's score less the growth of the GPU its CPU and memory cannot feed;
    None when no candidate gives its CPU and memory (the scores are the shapes')."""
    if not any(states[name].shape.room for name, shape_id in shape_of_node if shape_id >= 0):
        return None
    return {
        name: raw[shape_id] - stranded_growth(demand, states[name].shape, feed)
        for name, shape_id in shape_of_node
        if shape_id >= 0
    }


def _scaled_per_node(raw: Mapping[str, float], states: Mapping[Any, Any], hot_penalty: int) -> dict[str, int]:
    scaled = _scale(raw)
    return {
        name: max(0, score - hot_penalty) if states[name].shape.hot else score
        for name, score in scaled.items()
    }


def raw_score(
    policy: str,
    demand: GpuDemand,
    shape: NodeShape,
    prices: PriceTable,
    workload: Mapping[RequestType, float],
    feed: tuple[float, float] | None = None,
) -> float:
    """Higher is better; only the order among candidates matters (scores are rescaled)."""
    if not demand.wants_gpus:
        return 0.0
    if policy == "fragmentation":
        # Among nodes the pod fragments alike, the fuller one: packing keeps whole nodes for big
        # requests (benchmarks/placement.py --mig: better or equal on all five trace variants,
        # seeds 1-10, against the plain growth). Too small to reorder different growths.
        growth = fragmentation_growth(demand, shape, workload, feed)
        return -growth + _PACKING_TIE_BREAK * utilization_after(demand, shape)
    if policy == "cost":
        return -float(node_cost(demand, shape, prices))
    used = utilization_after(demand, shape)
    return used if policy == "binpack" else -used


def _scale(raw: Mapping[_K, float]) -> dict[_K, int]:
    if not raw:
        return {}
    low, high = min(raw.values()), max(raw.values())
    if high - low < 1e-9:
        return dict.fromkeys(raw, MAX_SCORE)
    return {name: round(MAX_SCORE * (value - low) / (high - low)) for name, value in raw.items()}


# -- binpack / spread ------------------------------------------------------------------------------


def utilization_after(demand: GpuDemand, shape: NodeShape) -> float:
    """Share of the node's capacity of the requested kinds in use once the pod is placed (0..1)."""
    shares = []
    for resource, count in demand.resources.items():
        total, free = shape.total(resource), shape.free(resource)
        if total:
            shares.append((total - free + count) / total)
    return sum(shares) / len(shares) if shares else 0.0


# -- cost ------------------------------------------------------------------------------------------


def node_cost(demand: GpuDemand, shape: NodeShape, prices: PriceTable) -> Decimal:
    """Hourly price of what the pod takes on this node (a model without a price counts as dear)."""
    total = Decimal(0)
    models = {resource: (model, share) for resource, model, share in shape.resources}
    for resource, count in demand.resources.items():
        model, share = models.get(resource, ("", 1.0))
        unit = prices.share_hourly(model, share)
        total += (unit if unit is not None else Decimal(10**6)) * count
    return total


# -- fragmentation ---------------------------------------------------------------------------------

_WHOLE_GPU_COUNTS = ((1, 0.5), (2, 0.25), (4, 0.15), (8, 0.1))


def learned_workload(snapshot: InventorySnapshot) -> dict[RequestType, float]:
    """Request types weighted by what is allocated now across the cluster, plus one of each kind
    offered (so a kind nobody uses yet still counts). Whole-GPU requests are spread over 1, 2, 4
    and 8 GPUs, smaller ones likelier, as in the published GPU traces."""
    offered: set[str] = set()
    # Distinct shapes by id: hashing 5,000 shapes took a third of a 5,000-node memo rebuild.
    for shape in {state.shape_id: state.shape for state in snapshot.states.values()}.values():
        offered.update(resource for resource, _, _ in shape.resources)
    allocated = snapshot.allocated_total
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


def learned_feed(snapshot: InventorySnapshot) -> tuple[float, float]:
    """(CPU milli, memory MiB) requested per GPU-equivalent allocated, over the nodes whose Node
    objects give their CPU and memory; (0, 0) where none does or nothing is allocated there."""
    cpu = memory = gpus = 0.0
    for state in snapshot.states.values():
        shape, room = state.shape, state.shape.room
        if room is None:
            continue
        cpu += room.cpu_milli - room.cpu_free_milli
        memory += room.memory_mib - room.memory_free_mib
        gpus += _allocated_gpus(shape)
    return (cpu / gpus, memory / gpus) if gpus > 0 else (0.0, 0.0)


def fragmentation_growth(
    demand: GpuDemand,
    shape: NodeShape,
    workload: Mapping[RequestType, float],
    feed: tuple[float, float] | None = None,
) -> float:
    """How much the node's fragmentation (``inventory.domain.fragmentation``) grows if the pod is
    placed there, in GPUs; with ``feed``, plus the growth of its stranded GPU (``stranded_growth``)."""
    share = {resource: fraction for resource, _, fraction in shape.resources}
    before = {FULL_GPU_RESOURCE: shape.full_gpus_free, **dict(shape.mig_free)}
    after = dict(before)
    for resource, count in demand.resources.items():
        after[resource] = after.get(resource, 0) - count
    types = tuple(
        TaskType(popularity, 0, 0, count, share.get(resource, 1.0), resource)
        for (resource, count), popularity in workload.items()
    )

    def fragmentation(free: Mapping[str, int]) -> float:
        pieces = {r: (share.get(r, 1.0),) * n for r, n in free.items() if n > 0}
        return frag_amount(inf, inf, pieces, 0.0, types)  # the types carry no CPU or memory

    return fragmentation(after) - fragmentation(before) + stranded_growth(demand, shape, feed)


def stranded_growth(demand: GpuDemand, shape: NodeShape, feed: tuple[float, float] | None) -> float:
    """How much the GPU that the node's free CPU and memory cannot feed (at ``feed``: CPU milli and
    memory MiB per GPU) grows with the pod, in GPUs; 0 without the node's room or ``feed``. The
    pod's own CPU and memory are not known here (its GPU demand is): the term sees the GPU it takes."""
    room = shape.room
    if room is None or not feed or not any(feed):
        return 0.0
    share = {resource: fraction for resource, _, fraction in shape.resources}
    idle = shape.full_gpus_free + sum(n * share.get(r, 1.0) for r, n in shape.mig_free)
    taken = sum(n * share.get(r, 1.0) for r, n in demand.resources.items())
    cpu, memory = room.cpu_free_milli, room.memory_free_mib
    return stranded_gpu(cpu, memory, max(0.0, idle - taken), *feed) - stranded_gpu(cpu, memory, idle, *feed)


#: Weight of the fuller node among equal fragmentation growths: far below the differences between
#: growths that the workload's popularities make.
_PACKING_TIE_BREAK = 1e-6

#: Memo keys of the learned feed ratios (shape ids are never negative).
_FEED_KEYS = (-1, -2)


def _allocated_gpus(shape: NodeShape) -> float:
    share = {resource: fraction for resource, _, fraction in shape.resources}
    used = float(shape.full_gpus_total - shape.full_gpus_free)
    for (resource, total), (_, free) in zip(shape.mig_total, shape.mig_free, strict=True):
        used += (total - free) * share.get(resource, 0.0)
    return used
