"""Cost analysis over a time window: what allocations cost, by team, namespace, model and profile,
and what the idle capacity cost. Pure: the allocations, the window and the capacity price come in.

Money is ``Decimal`` throughout and never rounded here: rounding is the API's business (cents), and
sums of rounded parts would drift from the rounded total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from inventory.domain.allocation import Allocation, span_hours
from inventory.domain.labels import RESOURCE_PREFIX
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import InventorySnapshot

UNASSIGNED_TEAM = "unassigned"
UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True, slots=True)
class CostAnalysis:
    """The cost of ``[start, end)``; every amount in ``currency``, unrounded."""

    start: datetime
    end: datetime
    currency: str
    #: What the allocations cost within the window.
    total: Decimal
    #: Team (``unassigned`` without one) -> cost.
    by_team: Mapping[str, Decimal]
    by_namespace: Mapping[str, Decimal]
    #: GPU model name (``unknown`` when the allocation does not say) -> cost.
    by_model: Mapping[str, Decimal]
    #: Resource name without ``nvidia.com/``: ``gpu`` for whole GPUs, ``mig-3g.40gb`` for a profile.
    by_profile: Mapping[str, Decimal]
    #: What every healthy GPU of the inventory costs over the window, each from when it was first seen.
    capacity_cost: Decimal
    #: Capacity cost not covered by allocations (never below 0).
    idle_cost: Decimal
    #: ``total / capacity_cost``; None when there is no priced capacity to compare with.
    utilization: Decimal | None

    @property
    def days(self) -> Decimal:
        return span_hours(self.end - self.start) / 24


@dataclass(frozen=True, slots=True)
class Capacity:
    """GPUs that cost ``hourly`` together, paid for since ``since``: when kgm first saw them (None:
    since before any window asked about)."""

    hourly: Decimal
    since: datetime | None = None

    def cost_within(self, start: datetime, end: datetime) -> Decimal:
        """What it cost in ``[start, end)``: nothing before it was first seen, as nobody could use it."""
        begin = start if self.since is None else max(start, self.since)
        return self.hourly * span_hours(end - begin) if begin < end else Decimal(0)


def profile_key(resource: str) -> str:
    """``nvidia.com/mig-3g.40gb`` -> ``mig-3g.40gb``; ``nvidia.com/gpu`` -> ``gpu``."""
    return resource.removeprefix(RESOURCE_PREFIX)


def overlap_hours(allocation: Allocation, start: datetime, end: datetime) -> Decimal:
    """Hours of the allocation inside ``[start, end)``; an open one counts up to ``end``."""
    return allocation.hours_within(start, end)


def allocation_cost(allocation: Allocation, start: datetime, end: datetime) -> Decimal:
    return allocation.cost_within(start, end)


def analyse(
    allocations: Iterable[Allocation],
    *,
    start: datetime,
    end: datetime,
    capacity: Sequence[Capacity],
    currency: str,
) -> CostAnalysis:
    """The cost of ``allocations`` within ``[start, end)`` against ``capacity``, each part counted from
    when it was first seen (a node that came a minute ago adds a minute of idle capacity, not the window).

    Allocations outside the window add nothing (but may be passed: the caller need not pre-filter).
    """
    if end < start:
        raise ValueError(f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    groups: dict[str, dict[str, Decimal]] = {"team": {}, "namespace": {}, "model": {}, "profile": {}}
    total = Decimal(0)
    for allocation in allocations:
        cost = allocation_cost(allocation, start, end)
        if not cost:
            continue
        total += cost
        keys = {
            "team": allocation.team or UNASSIGNED_TEAM,
            "namespace": allocation.namespace,
            "model": allocation.gpu_model or UNKNOWN_MODEL,
            "profile": profile_key(allocation.resource),
        }
        for group, key in keys.items():
            groups[group][key] = groups[group].get(key, Decimal(0)) + cost
    capacity_cost = sum((part.cost_within(start, end) for part in capacity), Decimal(0))
    return CostAnalysis(
        start=start,
        end=end,
        currency=currency,
        total=total,
        by_team=_frozen(groups["team"]),
        by_namespace=_frozen(groups["namespace"]),
        by_model=_frozen(groups["model"]),
        by_profile=_frozen(groups["profile"]),
        capacity_cost=capacity_cost,
        idle_cost=max(Decimal(0), capacity_cost - total),
        utilization=total / capacity_cost if capacity_cost > 0 else None,
    )


def capacity_of(snapshot: InventorySnapshot, prices: PriceTable) -> tuple[Capacity, ...]:
    """The hourly price of every healthy GPU in the inventory, per node, since the node's GpuNode was
    created (when kgm first saw it; the API server keeps that time across our restarts).

    A MIG-enabled GPU counts at the whole GPU's price, whether or not all its slices are carved into
    instances: capacity nobody can use is still paid for. GPUs of a model the price table lacks add
    nothing, as their allocations are recorded at no price either.
    """
    found = []
    for name in sorted(snapshot.nodes):
        record = snapshot.nodes[name]
        hourly = sum(
            (
                prices.hourly.get(gpu.model.name, Decimal(0))
                for gpu in record.gpunode.inventory.gpus
                if gpu.healthy
            ),
            Decimal(0),
        )
        found.append(Capacity(hourly, record.gpunode.created))
    return tuple(found)


def capacity_hourly(snapshot: InventorySnapshot, prices: PriceTable) -> Decimal:
    """The hourly price of every healthy GPU in the inventory now."""
    return sum((part.hourly for part in capacity_of(snapshot, prices)), Decimal(0))


def _frozen(costs: dict[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(sorted(costs.items(), key=lambda item: (-item[1], item[0]))))
