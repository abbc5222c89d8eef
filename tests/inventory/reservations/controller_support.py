"""GpuAllocation objects, and a rig that runs the GpuAllocation controller over a real Reserver with
an in-memory status store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.model import NodeName
from inventory.domain.offer import offer_of
from inventory.domain.prices import PriceTable
from inventory.kube import GROUP, VERSION, KubeNotFoundError, KubeUnavailableError
from inventory.ledger.sql import SqlLedger
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from inventory.reservations.controller import GpuAllocationController
from inventory.reservations.reserver import Reserver
from tests.inventory.clusters import RESERVATION_CLUSTER

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
Key = tuple[str, str]


def ga(
    name: str = "train",
    *,
    namespace: str = "ml",
    uid: str = "uid-1",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GpuAllocation",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


class Store:
    """In-memory statuses behind the controller's store interface; faults on demand."""

    def __init__(self) -> None:
        self.statuses: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[Key, dict[str, Any]]] = []
        self.gone: set[Key] = set()
        self.failures = 0

    def update_gpuallocation_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        key = (namespace, name)
        if self.failures:
            self.failures -= 1
            raise KubeUnavailableError("update gpuallocation status: 503", status=503)
        if key in self.gone:
            raise KubeNotFoundError("update gpuallocation status: 404", status=404)
        self.writes.append((key, status))
        self.statuses[key] = {**self.statuses.get(key, {}), **status}
        return {"status": self.statuses[key]}

    def written(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the API server would now hand it back, with the status written."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        return {**obj, "status": self.statuses[key]}


class Rig:
    def __init__(self, ledger: SqlLedger, *, leader: bool = True) -> None:
        cluster = parse_cluster(RESERVATION_CLUSTER)
        offer = offer_of(cluster)
        self.ledger = ledger
        self.cache: InventoryCache = cache_of(cluster)
        #: What the reserver announced: (allocation id, opened), in order.
        self.announced: list[tuple[str, bool]] = []
        self.reserver = Reserver(
            cache=self.cache,
            ledger=ledger,
            prices=PriceTable(),
            offer=lambda: offer,
            clock=lambda: NOW,
            on_change=lambda allocation, opened: self.announced.append((allocation.id, opened)),
        )
        self.store = Store()
        self.leader = leader
        self.controller = self.restarted()

    def restarted(self) -> GpuAllocationController:
        return GpuAllocationController(
            reservations=self.reserver, store=self.store, clock=lambda: NOW, is_leader=lambda: self.leader
        )

    def mig_free(self, node: str, profile: str) -> int:
        return self.cache.snapshot().capacity(NodeName(node)).mig_free[f"nvidia.com/mig-{profile}"]
