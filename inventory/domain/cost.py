"""Cost analysis over a time window: what allocations cost, by team, namespace, model and profile,
and what the idle capacity cost. Pure: the allocations, the window and the capacity price come in.

Money is ``Decimal`` throughout and never rounded here: rounding is the API's business (cents), and
sums of rounded parts would drift from the rounded total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    #: What every healthy GPU of the inventory costs over the window.
    capacity_cost: Decimal
    #: Capacity cost not covered by allocations (never below 0).
    idle_cost: Decimal
    #: ``total / capacity_cost``; None when there is no priced capacity to compare with.
    utilization: Decimal | None

    @property
    def days(self) -> Decimal:
        return span_hours(self.end - self.start) / 24


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
    capacity_hourly: Decimal,
    currency: str,
) -> CostAnalysis:
    """The cost of ``allocations`` within ``[start, end)`` against a capacity costing ``capacity_hourly``.

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
    capacity_cost = capacity_hourly * span_hours(end - start)
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


def capacity_hourly(snapshot: InventorySnapshot, prices: PriceTable) -> Decimal:
    """The hourly price of every healthy GPU in the inventory.

    A MIG-enabled GPU counts at the whole GPU's price, whether or not all its slices are carved into
    instances: capacity nobody can use is still paid for. GPUs of a model the price table lacks add
    nothing, as their allocations are recorded at no price either.
    """
    total = Decimal(0)
    for record in snapshot.nodes.values():
        for gpu in record.gpunode.inventory.gpus:
            if gpu.healthy:
                total += prices.hourly.get(gpu.model.name, Decimal(0))
    return total


def _frozen(costs: dict[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(sorted(costs.items(), key=lambda item: (-item[1], item[0]))))
