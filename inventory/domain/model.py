"""The domain model of what a cluster has: nodes, their GPUs, and the MIG instances on each GPU.

Static cluster files and (later) live NVML readings both end up in these structures, so everything
that judges capacity (admission, placement, cost) reads one shape whatever the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

from inventory.domain.catalogue import Catalogue, GpuModel
from inventory.domain.mig_layout import MigInstance
from inventory.domain.prices import PriceTable
from inventory.domain.quota import TeamQuota

NodeName = NewType("NodeName", str)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One physical GPU. With MIG enabled it is only usable through its MIG instances.

    The fields after ``mig_instances`` come from a live reading (NVML through the node agent); a
    cluster description leaves them at their defaults.
    """

    index: int
    model: GpuModel
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()
    uuid: str | None = None
    healthy: bool = True
    unhealthy_reason: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    temperature_c: int | None = None
    utilization_pct: int | None = None
    #: A MIG mode change waits for a GPU reset: the layout may change under the scheduler's feet.
    mig_pending: bool = False


@dataclass(frozen=True, slots=True)
class NodeInventory:
    name: NodeName
    gpus: tuple[GpuDevice, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterInventory:
    """A whole cluster: its nodes, plus the catalogue and prices they are judged with."""

    nodes: tuple[NodeInventory, ...]
    catalogue: Catalogue
    prices: PriceTable
    #: Team quotas of a cluster file (``kgm simulate`` enforces them at admission); none from a live cluster,
    #: whose quotas are GpuQuota and ResourceQuota objects.
    quotas: tuple[TeamQuota, ...] = ()
