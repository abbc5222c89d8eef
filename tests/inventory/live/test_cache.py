from __future__ import annotations

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import CacheSettings
from inventory.live.cache import InventoryCache, LiveOffer
from tests.inventory.gpunodes import SEVEN_SMALL, T0, Clock, gpu, gpunode, pod

A = NodeName("gpu-a")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> InventoryCache:
    cache = InventoryCache(
        catalogue=builtin_catalogue(),
        settings=CacheSettings(stale_after_s=90, assume_ttl_s=60),
        clock=clock,
        wall_clock=clock.wall_clock,
    )
    cache.replace_gpunodes([gpunode(A, [gpu(0, node=A), gpu(1, node=A), gpu(2, node=A, mig=SEVEN_SMALL)])])
    cache.replace_pods([])
    return cache


def test_capacity_counts_whole_gpus_and_mig_instances(cache: InventoryCache) -> None:
    capacity = cache.snapshot().capacity(A)
    assert (capacity.full_gpus_total, capacity.full_gpus_free) == (2, 2)
    assert dict(capacity.mig_free) == {"nvidia.com/mig-1g.10gb": 7}
    assert capacity.schedulable and capacity.mig_schedulable


def test_bound_pods_hold_capacity_until_they_end(cache: InventoryCache) -> None:
    cache.apply_pod("ADDED", pod("p1", A, {"nvidia.com/gpu": "1"}))
    cache.apply_pod("ADDED", pod("p2", A, {"nvidia.com/mig-1g.10gb": "1"}))
    cache.apply_pod("ADDED", pod("p3", None, {"nvidia.com/gpu": "1"}))  # not bound yet: holds nothing
    capacity = cache.snapshot().capacity(A)
    assert capacity.full_gpus_free == 1
    assert capacity.mig_free["nvidia.com/mig-1g.10gb"] == 6
    cache.apply_pod("MODIFIED", pod("p1", A, {"nvidia.com/gpu": "1"}, phase="Succeeded"))
    cache.apply_pod("DELETED", pod("p2", A, {"nvidia.com/mig-1g.10gb": "1"}))
    capacity = cache.snapshot().capacity(A)
    assert capacity.full_gpus_free == 2
    assert capacity.mig_free["nvidia.com/mig-1g.10gb"] == 7


def test_an_assumed_allocation_holds_room_until_the_watch_confirms_it(cache: InventoryCache) -> None:
    cache.assume("p1", A, {"nvidia.com/gpu": 2})
    assert cache.snapshot().capacity(A).full_gpus_free == 0
    cache.apply_pod("ADDED", pod("p1", A, {"nvidia.com/gpu": "2"}))  # confirmed: counted once, not twice
    assert cache.snapshot().capacity(A).full_gpus_free == 0
    cache.apply_pod("DELETED", pod("p1", A, {"nvidia.com/gpu": "2"}))
    assert cache.snapshot().capacity(A).full_gpus_free == 2


def test_an_assumption_expires_and_a_forgotten_one_is_rolled_back(
    cache: InventoryCache, clock: Clock
) -> None:
    cache.assume("p1", A, {"nvidia.com/gpu": 1})
    cache.assume("p2", A, {"nvidia.com/mig-1g.10gb": 1})
    cache.forget("p2")
    assert cache.snapshot().capacity(A).mig_free["nvidia.com/mig-1g.10gb"] == 7
    clock.advance(61)
    assert cache.snapshot().capacity(A).full_gpus_free == 2
    assert cache.assumed("p1") is None


def test_a_silent_node_turns_stale_with_a_reason(cache: InventoryCache, clock: Clock) -> None:
    clock.advance(95)
    capacity = cache.snapshot().capacity(A)
    assert not capacity.schedulable
    assert capacity.reason == "inventory stale for 95 s (limit 90 s)"
    cache.apply_gpunode("MODIFIED", gpunode(A, [gpu(0, node=A)], generation=2, heartbeat=clock.wall))
    assert cache.snapshot().capacity(A).schedulable


def test_a_heartbeat_with_the_same_generation_does_not_refresh_the_node(
    cache: InventoryCache, clock: Clock
) -> None:
    clock.advance(95)
    cache.apply_gpunode("MODIFIED", gpunode(A, [gpu(0, node=A)], generation=1))
    assert not cache.snapshot().capacity(A).schedulable


@pytest.mark.parametrize(("silent_for", "stale"), [(5, False), (200, True)])
def test_a_restarted_cache_trusts_the_heartbeat_time_for_age(
    clock: Clock, silent_for: int, stale: bool
) -> None:
    clock.advance(silent_for)
    cache = InventoryCache(catalogue=builtin_catalogue(), clock=clock, wall_clock=clock.wall_clock)
    cache.replace_gpunodes([gpunode(A, [gpu(0, node=A)], heartbeat=T0)])
    assert cache.snapshot().capacity(A).schedulable is not stale


@pytest.mark.parametrize(
    ("state", "ok"), [("success", True), ("pending", False), ("rebooting", False), ("failed", False)]
)
def test_the_mig_manager_state_gates_mig_placement(cache: InventoryCache, state: str, ok: bool) -> None:
    cache.replace_nodes([{"metadata": {"name": A, "labels": {"nvidia.com/mig.config.state": state}}}])
    capacity = cache.snapshot().capacity(A)
    assert capacity.mig_schedulable is ok
    assert capacity.schedulable  # whole GPUs are unaffected
    if not ok:
        assert capacity.mig_reason == f"MIG reconfiguration {state} (nvidia.com/mig.config.state={state})"


def mig_state(state: str) -> dict[str, object]:
    return {"metadata": {"name": A, "labels": {"nvidia.com/mig.config.state": state}}}


@pytest.mark.parametrize("relist", [False, True], ids=["watch", "relist"])
def test_after_a_reconfiguration_mig_waits_for_the_agents_next_report(
    cache: InventoryCache, relist: bool
) -> None:
    def label(state: str) -> None:
        if relist:
            cache.replace_nodes([mig_state(state)])
        else:
            cache.apply_node("MODIFIED", mig_state(state))

    label("pending")
    label("success")  # the MIG manager is done; the GpuNode still lists the old layout
    capacity = cache.snapshot().capacity(A)
    assert not capacity.mig_schedulable
    assert (
        capacity.mig_reason == "MIG reconfiguration done; waiting for the node agent to report the new layout"
    )
    cache.apply_gpunode(
        "MODIFIED", gpunode(A, [gpu(0, node=A), gpu(1, node=A), gpu(2, node=A)], generation=2)
    )
    capacity = cache.snapshot().capacity(A)
    assert capacity.mig_schedulable and capacity.mig_reason is None


def test_a_report_that_came_before_the_success_label_is_not_trusted(cache: InventoryCache) -> None:
    # The watches do not order GpuNode and Node events: a report read before the MIG manager was done
    # may list a half-made layout, so only a report after ``success`` counts (the next heartbeat).
    cache.apply_node("MODIFIED", mig_state("pending"))
    new_layout = [gpu(0, node=A), gpu(1, node=A, mig=SEVEN_SMALL), gpu(2, node=A, mig=SEVEN_SMALL)]
    cache.apply_gpunode("MODIFIED", gpunode(A, new_layout, generation=2))
    cache.apply_node("MODIFIED", mig_state("success"))
    assert not cache.snapshot().capacity(A).mig_schedulable
    cache.apply_gpunode("MODIFIED", gpunode(A, new_layout, generation=3))
    assert dict(cache.snapshot().capacity(A).mig_free) == {"nvidia.com/mig-1g.10gb": 14}


def test_a_node_first_seen_settled_takes_mig_pods_at_once(cache: InventoryCache) -> None:
    cache.replace_nodes([mig_state("success")])  # a restart: nothing changed while we watched
    assert cache.snapshot().capacity(A).mig_schedulable


def test_a_new_reconfiguration_while_waiting_is_gated_by_its_own_state(cache: InventoryCache) -> None:
    for state in ("pending", "success", "rebooting"):
        cache.apply_node("MODIFIED", mig_state(state))
    assert cache.snapshot().capacity(A).mig_reason == (
        "MIG reconfiguration rebooting (nvidia.com/mig.config.state=rebooting)"
    )


def test_unhealthy_gpus_offer_nothing(cache: InventoryCache) -> None:
    obj = gpunode(
        A,
        [gpu(0, node=A), gpu(1, node=A, mig=SEVEN_SMALL)],
        generation=2,
        unhealthy={"GPU-gpu-a-0": "XID 79", "GPU-gpu-a-1": "XID 48"},
    )
    cache.apply_gpunode("MODIFIED", obj)
    capacity = cache.snapshot().capacity(A)
    assert capacity.full_gpus_total == 0
    assert dict(capacity.mig_total) == {}


def test_a_snapshot_never_changes_after_it_is_taken(cache: InventoryCache) -> None:
    before = cache.snapshot()
    cache.apply_pod("ADDED", pod("p1", A, {"nvidia.com/gpu": "2"}))
    cache.apply_gpunode("DELETED", gpunode(A, []))
    assert before.capacity(A).full_gpus_free == 2
    assert A not in cache.snapshot().nodes


def test_a_relist_replaces_everything(cache: InventoryCache) -> None:
    cache.replace_gpunodes([gpunode("gpu-b", [gpu(0, node="gpu-b")])])
    assert set(cache.snapshot().nodes) == {"gpu-b"}


def test_the_live_offer_lists_profiles_of_fresh_nodes_only(cache: InventoryCache, clock: Clock) -> None:
    cache.apply_gpunode(
        "ADDED", gpunode("gpu-nvl", [gpu(0, node="gpu-nvl", product="NVIDIA H100 NVL", mig=[("3g.47gb", 0)])])
    )
    offer = LiveOffer(cache, PriceTable(), builtin_catalogue(), refresh_s=0, clock=clock)
    assert {r.resource_name for r in offer().resources} >= {
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-3g.47gb",
    }
    clock.advance(80)
    cache.apply_gpunode(
        "MODIFIED",
        gpunode(A, [gpu(0, node=A), gpu(1, node=A, mig=SEVEN_SMALL)], generation=5, heartbeat=clock.wall),
    )
    clock.advance(20)  # gpu-nvl silent for 100 s: stale
    assert {r.resource_name for r in offer().resources} == {"nvidia.com/gpu", "nvidia.com/mig-1g.10gb"}
    assert offer.ready()
