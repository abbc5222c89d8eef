"""The domain model of what a cluster has: nodes, their GPUs, and the MIG instances on each GPU.

Static cluster files and (later) live NVML readings both end up in these structures, so everything
that judges capacity (admission, placement, cost) reads one shape whatever the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

from inventory.catalogue import Catalogue, GpuModel
from inventory.mig_layout import MigInstance
from inventory.prices import PriceTable

NodeName = NewType("NodeName", str)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One physical GPU. With MIG enabled it is only usable through its MIG instances."""

    index: int
    model: GpuModel
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()


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
