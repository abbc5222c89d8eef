"""While kgm applies layouts, admission offers the profiles the planner may carve on the models
present (what exists, too), from fresh nodes only, recomputed at most every refresh interval."""

from __future__ import annotations

from inventory.domain.mig_candidates import plannable_offer
from inventory.domain.prices import PriceTable
from inventory.live.cache import InventoryCache, LiveOffer
from tests.inventory.layouts.support import CATALOGUE, gpunode, h100_node


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _profiles(offer: LiveOffer) -> set[str | None]:
    return {r.profile.name if r.profile else None for r in offer().resources}


def test_the_offer_has_what_the_planner_may_carve_and_what_exists() -> None:
    clock = Clock()
    cache = InventoryCache(catalogue=CATALOGUE, clock=clock)
    cache.replace_gpunodes([gpunode(h100_node("a", None, ["1g.10gb+me"]))])
    cache.replace_pods([])
    offer = LiveOffer(cache, PriceTable(), CATALOGUE, clock=clock, offer_of=plannable_offer)
    assert offer.ready()
    profiles = _profiles(offer)
    assert {None, "1g.10gb", "3g.40gb", "4g.40gb", "1g.10gb+me"} <= profiles  # whole GPU, carvable, existing
    assert "7g.80gb" not in profiles  # MIG off serves the whole GPU


def test_the_offer_is_recomputed_after_the_refresh_interval_from_fresh_nodes_only() -> None:
    clock = Clock()
    cache = InventoryCache(catalogue=CATALOGUE, clock=clock)
    cache.replace_gpunodes([])
    cache.replace_pods([])
    offer = LiveOffer(cache, PriceTable(), CATALOGUE, clock=clock, refresh_s=5, offer_of=plannable_offer)
    assert _profiles(offer) == set()
    cache.apply_gpunode("ADDED", gpunode(h100_node("a", None)))
    assert _profiles(offer) == set()  # within the interval: the computed offer
    clock.now += 5
    assert "3g.40gb" in _profiles(offer)
    clock.now += 1000  # the node's inventory is stale now: nothing of it is offered
    assert _profiles(offer) == set()
