"""What a cluster offers to a pod at admission: whole GPUs and MIG instances, by model, with prices.

"Offered" means what exists in the inventory today (the instances GPUs are partitioned into now),
not every profile a model could support: admission must never route a pod to a resource that no
node advertises, or the pod would stay Pending forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from inventory.domain.catalogue import GpuModel, MigProfile
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.model import ClusterInventory


@dataclass(frozen=True, slots=True)
class OfferedResource:
    """One kind of GPU resource some node has: a whole GPU of a model, or a MIG profile on a model."""

    model: GpuModel
    profile: MigProfile | None
    #: None for a model with no price (a live GPU that no price table names).
    hourly_price: Decimal | None
    resource_name: str = field(init=False)
    memory_gb: int = field(init=False)

    def __post_init__(self) -> None:
        profile = self.profile
        object.__setattr__(self, "resource_name", profile.resource_name if profile else FULL_GPU_RESOURCE)
        object.__setattr__(self, "memory_gb", profile.memory_gb if profile else self.model.memory_gb)

    def matches_product(self, product: str | None) -> bool:
        """True when no product is asked for, or the model is the one ``nvidia.com/gpu.product`` names."""
        return product is None or product.lower() in self.model.aliases


@dataclass(frozen=True, slots=True)
class Offer:
    """Every distinct resource in the cluster, whole GPUs first, each (model, profile) once."""

    resources: tuple[OfferedResource, ...]
    currency: str = "USD"
    _by_name: Mapping[str, tuple[OfferedResource, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Admission asks "who offers resource X" several times per pod; answer from an index.
        by_name: dict[str, list[OfferedResource]] = {}
        for resource in self.resources:
            by_name.setdefault(resource.resource_name, []).append(resource)
        object.__setattr__(self, "_by_name", {name: tuple(found) for name, found in by_name.items()})

    @property
    def largest_gpu_memory_gb(self) -> int:
        """Memory of the largest GPU in the cluster, partitioned or not: no pod can need more."""
        return max((r.model.memory_gb for r in self.resources), default=0)

    def mig(self, product: str | None = None) -> tuple[OfferedResource, ...]:
        return tuple(r for r in self.resources if r.profile and r.matches_product(product))

    def full_gpus(self, product: str | None = None) -> tuple[OfferedResource, ...]:
        return tuple(r for r in self.resources if not r.profile and r.matches_product(product))

    def named(self, resource_name: str, product: str | None = None) -> tuple[OfferedResource, ...]:
        found = self._by_name.get(resource_name, ())
        return found if product is None else tuple(r for r in found if r.matches_product(product))


def offer_of(cluster: ClusterInventory) -> Offer:
    """The distinct resources of a cluster, in a stable order (whole GPUs, then MIG; by model name)."""
    seen: dict[tuple[str, str | None], OfferedResource] = {}
    for gpu in (gpu for node in cluster.nodes for gpu in node.gpus):
        if not gpu.mig_enabled:
            whole: tuple[str, str | None] = (gpu.model.name, None)
            if whole not in seen:
                seen[whole] = OfferedResource(gpu.model, None, cluster.prices.hourly.get(gpu.model.name))
            continue
        for instance in gpu.mig_instances:
            key = (gpu.model.name, instance.profile.name)
            if key not in seen:
                price = cluster.prices.hourly.get(gpu.model.name)
                if price is not None:
                    price = cluster.prices.mig_instance(gpu.model, instance.profile)
                seen[key] = OfferedResource(gpu.model, instance.profile, price)
    return Offer(resources=_stable(seen.values()), currency=cluster.prices.currency)


def _stable(resources: Iterable[OfferedResource]) -> tuple[OfferedResource, ...]:
    return tuple(
        sorted(
            resources,
            key=lambda r: (
                r.profile is not None,
                r.model.name,
                r.profile.memory_gb if r.profile else 0,
                r.profile.name if r.profile else "",
            ),
        )
    )


def smallest_mig_fit(
    offer: Offer, memory_gb: Decimal | None, product: str | None = None
) -> OfferedResource | None:
    """The smallest offered MIG instance with at least ``memory_gb`` (any size when None).

    Smallest by memory, then compute slices, then price, so that a request takes no more of a GPU
    than it needs. Media-extension profiles are never chosen: there is one per GPU at most, and
    they exist for the workloads that ask for them by name.
    """
    fitting = [
        r
        for r in offer.mig(product)
        if r.profile is not None
        and not r.profile.media_extensions
        and (memory_gb is None or r.memory_gb >= memory_gb)
    ]
    return min(fitting, key=_size_order, default=None)


def _size_order(resource: OfferedResource) -> tuple[int, int, Decimal, str]:
    compute = resource.profile.compute_slices if resource.profile else resource.model.compute_slices_total
    price = resource.hourly_price if resource.hourly_price is not None else Decimal("Infinity")
    return (resource.memory_gb, compute, price, resource.resource_name)


def no_mig_fit_reason(offer: Offer, memory_gb: Decimal | None, product: str | None = None) -> str:
    """Why :func:`smallest_mig_fit` found nothing, in words a pod's owner can act on."""
    where = f" on {product}" if product else ""
    candidates = [r for r in offer.mig(product) if r.profile and not r.profile.media_extensions]
    if not candidates:
        return f"no MIG instances are offered{where} in this cluster"
    largest = max(candidates, key=_size_order)
    return (
        f"no MIG instance offered{where} has {memory_gb} GB; "
        f"the largest is {largest.resource_name} ({largest.memory_gb} GB)"
    )


def hourly_price(
    offer: Offer, resource_name: str, *, product: str | None = None, memory_gb: Decimal | None = None
) -> Decimal | None:
    """The price per hour of one unit of ``resource_name``, or None when no node offers it (or one
    that does has no price: an estimate that leaves a model out would not be an upper bound).

    Admission does not know yet which model the pod will land on when several offer the same
    resource (a 1g.10gb exists on A100-80GB and H100-80GB), so this is the highest of their prices:
    a cost estimate that may come out higher, never lower, than the bill.
    """
    entries = [
        r for r in offer.named(resource_name, product) if memory_gb is None or r.memory_gb >= memory_gb
    ]
    prices = [r.hourly_price for r in entries]
    if not prices or any(price is None for price in prices):
        return None
    return max(price for price in prices if price is not None)
