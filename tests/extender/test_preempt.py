from __future__ import annotations

from extender.service import Victims
from tests.extender.clusters import extender, gpu_pod, node


def test_only_victims_holding_what_the_pod_needs_are_kept_and_only_where_that_makes_room() -> None:
    ext, cache = extender([node("a", count=2), node("b", count=2), node("c", mig=["3g.40gb", "3g.40gb"])])
    held = {
        "a1": ("a", {"nvidia.com/gpu": "2"}),
        "b1": ("b", {"nvidia.com/gpu": "1"}),
        "b2": ("b", {"cpu": "4"}),  # holds no GPU: evicting it frees nothing for this pod
        "c1": ("c", {"nvidia.com/mig-3g.40gb": "2"}),
    }
    for uid, (name, resources) in held.items():
        cache.apply_pod("ADDED", gpu_pod(uid, resources, node_name=name))
    pod = gpu_pod("p", {"nvidia.com/gpu": "2"})
    victims = {
        "a": Victims(pod_uids=["a1"], num_pdb_violations=0),
        "b": Victims(pod_uids=["b1", "b2"], num_pdb_violations=1),
        "c": Victims(pod_uids=["c1"], num_pdb_violations=0),  # MIG instances do not make whole GPUs
    }
    assert ext.preempt(pod, victims) == {
        "a": Victims(pod_uids=["a1"], num_pdb_violations=0),
        "b": Victims(pod_uids=["b1"], num_pdb_violations=1),
    }


def test_evicting_too_little_drops_the_node() -> None:
    ext, cache = extender([node("a", count=4)])
    cache.apply_pod("ADDED", gpu_pod("x", {"nvidia.com/gpu": "2"}, node_name="a"))
    cache.apply_pod("ADDED", gpu_pod("y", {"nvidia.com/gpu": "2"}, node_name="a"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "4"})
    assert ext.preempt(pod, {"a": Victims(pod_uids=["x"], num_pdb_violations=0)}) == {}
