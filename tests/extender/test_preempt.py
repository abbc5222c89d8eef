"""Preempt: kube-scheduler evicts exactly the victims of the node it picks from our reply and checks
nothing again (pkg/scheduler/framework/preemption callExtenders), so a node is kept whole or dropped."""

from __future__ import annotations

from extender.service import Victims
from inventory.domain.model import NodeName
from tests.extender.clusters import extender, gpu_pod, node


def test_a_kept_node_keeps_every_victim_in_order_and_its_pdb_violations() -> None:
    ext, cache = extender([node("a", count=2), node("b", count=2), node("c", mig=["3g.40gb", "3g.40gb"])])
    held = {
        "a1": ("a", {"nvidia.com/gpu": "2"}),
        "b1": ("b", {"nvidia.com/gpu": "1"}),
        "b0": ("b", {"nvidia.com/gpu": "1"}),
        "b2": ("b", {"cpu": "4"}),  # no GPU, but kube-scheduler needs its CPU for the in-tree fit
        "c1": ("c", {"nvidia.com/mig-3g.40gb": "2"}),
    }
    for uid, (name, resources) in held.items():
        cache.apply_pod("ADDED", gpu_pod(uid, resources, node_name=name))
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"})
    victims = {
        "a": Victims(pod_uids=["a1"], num_pdb_violations=0),
        "b": Victims(pod_uids=["b2", "b1"], num_pdb_violations=1),
        "c": Victims(pod_uids=["c1"], num_pdb_violations=0),  # MIG instances do not make whole GPUs
    }
    assert ext.preempt(pod, victims) == {
        "a": Victims(pod_uids=["a1"], num_pdb_violations=0),
        "b": Victims(pod_uids=["b2", "b1"], num_pdb_violations=1),
    }


def test_a_node_with_gpu_room_already_is_kept_with_victims_that_free_cpu_only() -> None:
    ext, cache = extender([node("a", count=2)])
    cache.apply_pod("ADDED", gpu_pod("x", {"nvidia.com/gpu": "1"}, node_name="a"))
    cache.apply_pod("ADDED", gpu_pod("cpu-hog", {"cpu": "60"}, node_name="a"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"})
    victims = {"a": Victims(pod_uids=["cpu-hog"], num_pdb_violations=2)}
    assert ext.preempt(pod, victims) == victims


def test_evicting_too_little_drops_the_node() -> None:
    ext, cache = extender([node("a", count=4)])
    cache.apply_pod("ADDED", gpu_pod("x", {"nvidia.com/gpu": "2"}, node_name="a"))
    cache.apply_pod("ADDED", gpu_pod("y", {"nvidia.com/gpu": "2"}, node_name="a"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "4"})
    assert ext.preempt(pod, {"a": Victims(pod_uids=["x"], num_pdb_violations=0)}) == {}
    both = {"a": Victims(pod_uids=["x", "y"], num_pdb_violations=0)}
    assert ext.preempt(pod, both) == both


def test_nodes_without_inventory_or_victims_are_dropped() -> None:
    ext, cache = extender([node("a", count=1)])
    cache.apply_pod("ADDED", gpu_pod("x", {"nvidia.com/gpu": "1"}, node_name="a"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"})
    victims = {
        "a": Victims(pod_uids=[], num_pdb_violations=0),
        "ghost": Victims(pod_uids=["g"], num_pdb_violations=0),
    }
    assert ext.preempt(pod, victims) == {}


def test_a_pod_that_wants_no_gpu_gets_every_candidate_back() -> None:
    ext, _ = extender([node("a", count=1)])
    victims = {"a": Victims(pod_uids=["x"], num_pdb_violations=3)}
    assert ext.preempt(gpu_pod("p", {"cpu": "1"}), victims) == victims


def test_a_pod_claiming_a_reservation_is_offered_only_its_reserved_node() -> None:
    ext, cache = extender([node("a", count=1), node("b", count=1)])
    cache.assume("res-1", NodeName("a"), {"nvidia.com/gpu": 1}, ttl_s=3600)
    cache.apply_pod("ADDED", gpu_pod("x", {"nvidia.com/gpu": "1"}, node_name="b"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"}, annotations={"gpu.kgm.io/allocation-id": "res-1"})
    victims = {
        "a": Victims(pod_uids=["cpu-hog"], num_pdb_violations=0),  # its room is held for the pod
        "b": Victims(pod_uids=["x"], num_pdb_violations=0),  # would free a GPU, but not the reserved one
    }
    assert ext.preempt(pod, victims) == {"a": victims["a"]}
    assert ext.preempt(pod, {"b": victims["b"]}) == {}
