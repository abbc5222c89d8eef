"""What the webhook offers while kgm applies MIG layouts: what exists, plus the profiles the planner
may create (``plannable_offer``), so a pod whose size no GPU is carved into today is admitted with
that profile and waits (Unschedulable) for its layout, instead of being refused or given a whole
GPU. Only in apply mode: a pod admitted for a profile nobody will create would wait forever."""

from __future__ import annotations

import time
from collections.abc import Callable

from inventory.domain.catalogue import Catalogue
from inventory.domain.mig_candidates import plannable_offer
from inventory.domain.model import ClusterInventory
from inventory.domain.offer import Offer
from inventory.domain.prices import PriceTable
from inventory.live.cache import InventoryCache


class PlannableOffer:
    """As ``inventory.live.cache.LiveOffer`` (recomputed at most every ``refresh_s``, from the fresh
    nodes), with the profiles the planner may create on the MIG-capable models present."""

    def __init__(
        self,
        cache: InventoryCache,
        prices: PriceTable,
        catalogue: Catalogue,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._prices = prices
        self._catalogue = catalogue
        self._refresh_s = refresh_s
        self._clock = clock
        self._offer: Offer | None = None
        self._computed_at = 0.0

    def __call__(self) -> Offer:
        now = self._clock()
        if self._offer is None or now - self._computed_at >= self._refresh_s:
            snapshot = self._cache.snapshot()
            fresh = tuple(
                record.gpunode.inventory
                for name, record in snapshot.nodes.items()
                if snapshot.capacity(name).schedulable
            )
            cluster = ClusterInventory(nodes=fresh, catalogue=self._catalogue, prices=self._prices)
            self._offer, self._computed_at = plannable_offer(cluster), now
        return self._offer

    def ready(self) -> bool:
        return self._cache.snapshot().synced
