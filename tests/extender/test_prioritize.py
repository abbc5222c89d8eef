from __future__ import annotations

import pytest

from extender.prioritize import _scale, learned_feed, raw_score
from inventory.domain.demand import GpuDemand
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeRoom, NodeShape
from tests.extender.clusters import cache as make_cache
from tests.extender.clusters import extender, gpu_pod, node
from tests.inventory.gpunodes import gpu, gpunode

POLICY = "gpu.kgm.io/placement-policy"


def scores(
    policy: str | None,
    resources: dict[str, str],
    nodes: list[dict[str, object]],
    held: dict[str, dict[str, str]] | None = None,
) -> dict[str, int]:
    ext, cache = extender(nodes)  # type: ignore[arg-type]
    for i, (name, resources_held) in enumerate((held or {}).items()):
        cache.apply_pod("ADDED", gpu_pod(f"held{i}", resources_held, node_name=name))
    pod = gpu_pod("p", resources, annotations={POLICY: policy} if policy else {})
    names = [str(n["name"]) for n in nodes]
    return ext.prioritize(pod, names)


EIGHT = {"nvidia.com/gpu": "8"}
SEVEN_HELD = {"nvidia.com/gpu": "7"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("binpack", {"busy": 10, "idle": 0}, id="binpack fills the busy node"),
        pytest.param("spread", {"busy": 0, "idle": 10}, id="spread takes the idle node"),
        # One free GPU left on 'busy': taking it costs nothing, while taking one of 'idle''s eight
        # breaks the only block that can host an 8-GPU job.
        pytest.param("fragmentation", {"busy": 10, "idle": 0}, id="fragmentation keeps the big block whole"),
        pytest.param(None, {"busy": 10, "idle": 0}, id="fragmentation is the default"),
        pytest.param("no-such-policy", {"busy": 10, "idle": 0}, id="an unknown policy falls back"),
    ],
)
def test_policies_on_whole_gpus(policy: str | None, expected: dict[str, int]) -> None:
    nodes = [node("busy", count=8), node("idle", count=8)]
    assert scores(policy, {"nvidia.com/gpu": "1"}, nodes, held={"busy": SEVEN_HELD}) == expected


def test_cost_prefers_the_cheapest_resource_that_fits() -> None:
    nodes = [
        node("h100", count=1),
        node("a100", model="A100-80GB", count=1),
        node("h200", model="H200-141GB"),
    ]
    assert scores("cost", {"nvidia.com/gpu": "1"}, nodes) == {"h100": 4, "a100": 10, "h200": 0}


def test_fragmentation_ties_go_to_the_fuller_node() -> None:
    # A 1g.10gb pod: with one of each profile wanted, taking 'mixed''s only 1g fragments it as much
    # as taking one of 'small''s seven; the fuller node gets the pod, 'small' stays whole for more.
    nodes = [node("mixed", mig=["1g.10gb", "2g.20gb", "3g.40gb"]), node("small", mig=["1g.10gb"] * 7)]
    assert scores("fragmentation", {"nvidia.com/mig-1g.10gb": "1"}, nodes) == {"mixed": 10, "small": 0}


def test_a_hot_node_loses_points() -> None:
    ext, cache = extender([node("cool", count=8), node("hot", count=8)])
    cache.apply_gpunode(
        "MODIFIED", gpunode("hot", [gpu(i, node="hot", temperature=85) for i in range(8)], generation=2)
    )
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"}, annotations={POLICY: "spread"})
    assert ext.prioritize(pod, ["cool", "hot"]) == {"cool": 10, "hot": 7}


def test_scores_are_deterministic_and_independent_of_candidate_order() -> None:
    ext, cache = extender([node(f"n{i}", count=8) for i in range(6)])
    for i in range(6):
        for j in range(i):
            cache.apply_pod("ADDED", gpu_pod(f"h{i}-{j}", {"nvidia.com/gpu": "1"}, node_name=f"n{i}"))
    pod = gpu_pod("p", {"nvidia.com/gpu": "2"})
    names = [f"n{i}" for i in range(6)]
    forward = ext.prioritize(pod, names)
    backward = ext.prioritize(pod, list(reversed(names)))
    assert forward == backward
    assert all(0 <= s <= 10 for s in forward.values())
    assert cache.snapshot().capacity(NodeName("n5")).full_gpus_free == 3
    assert forward["n5"] == 10  # the fullest node that still fits: a 2-GPU pod breaks no big block there


H100 = "H100-80GB"
SHARE = {"nvidia.com/gpu": 1.0, "nvidia.com/mig-1g.10gb": 1 / 7, "nvidia.com/mig-2g.20gb": 2 / 7}
SHARE |= {"nvidia.com/mig-3g.40gb": 3 / 7, "nvidia.com/mig-7g.80gb": 1.0}


def shape(whole: tuple[int, int], mig: dict[str, tuple[int, int]], room: NodeRoom | None = None) -> NodeShape:
    """A shape of H100s: (whole GPUs, free), per MIG resource (instances, free)."""
    resources = [r for r in SHARE if (r == "nvidia.com/gpu" and whole[0]) or r in mig]
    return NodeShape(
        full_gpus_total=whole[0],
        full_gpus_free=whole[1],
        mig_total=tuple(sorted((r, n) for r, (n, _) in mig.items())),
        mig_free=tuple(sorted((r, f) for r, (_, f) in mig.items())),
        full_gpu_memory_gb=(80,) * whole[0],
        mig_blocked=None,
        aliases=frozenset(),
        models=(H100,),
        resources=tuple(sorted((r, H100, SHARE[r]) for r in resources)),
        unhealthy=(),
        hot=False,
        room=room,
    )


M2, M3, M7 = "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb", "nvidia.com/mig-7g.80gb"


# Scores computed by the extender's fragmentation before it became the shared policy
# (inventory.domain.fragmentation); the shapes have no CPU or memory, so nothing may change.
@pytest.mark.parametrize(
    ("shapes", "workload", "resources", "expected"),
    [
        pytest.param(
            [shape((7, 2), {M2: (2, 0), M3: (6, 3), M7: (1, 0)}), shape((2, 1), {M2: (5, 0), M3: (0, 0)})],
            {("nvidia.com/gpu", 8): 0.079, ("nvidia.com/mig-1g.10gb", 1): 0.35, (M2, 1): 0.47, (M7, 1): 0.1},
            {M3: 1},
            [10, 0],
            id="MIG and whole GPUs",
        ),
        pytest.param(
            [
                shape((3, 1), {M2: (1, 0), M3: (4, 2), M7: (3, 3)}),
                shape((3, 0), {"nvidia.com/mig-1g.10gb": (4, 2), M7: (3, 1)}),
                shape((5, 4), {M3: (6, 1), M7: (5, 3)}),
            ],
            {("nvidia.com/gpu", 2): 0.45, ("nvidia.com/gpu", 4): 0.55},
            {M3: 1},
            [10, 0, 10],
            id="whole-GPU workload",
        ),
    ],
)
def test_fragmentation_scores_as_before_without_cpu(
    shapes: list[NodeShape],
    workload: dict[tuple[str, int], float],
    resources: dict[str, int],
    expected: list[int],
) -> None:
    raw = {
        i: raw_score("fragmentation", GpuDemand(resources), s, PriceTable(), workload)
        for i, s in enumerate(shapes)
    }
    assert _scale(raw) == dict(enumerate(expected))


def test_fragmentation_takes_the_gpu_a_node_cannot_feed() -> None:
    # Both nodes have 4 of 8 GPUs free; 'starved' has the CPU for one more GPU task only: its other
    # free GPUs are stranded, and a GPU pod there strands nothing new.
    starved = shape((8, 4), {}, NodeRoom(96000, 10**6, 12000, 10**6))
    roomy = shape((8, 4), {}, NodeRoom(96000, 10**6, 48000, 10**6))
    workload = {("nvidia.com/gpu", 1): 1.0}
    demand = GpuDemand({"nvidia.com/gpu": 1})
    feed = (12000.0, 0.0)  # CPU milli per GPU
    starved_score = raw_score("fragmentation", demand, starved, PriceTable(), workload, feed)
    assert starved_score > raw_score("fragmentation", demand, roomy, PriceTable(), workload, feed)
    # without the ratios (or CPU) the two are alike
    assert raw_score("fragmentation", demand, starved, PriceTable(), workload) == raw_score(
        "fragmentation", demand, roomy, PriceTable(), workload
    )


def test_the_feed_ratios_are_learned_from_the_nodes_that_give_cpu() -> None:
    cache = make_cache([node("a", count=8), node("b", count=8)])
    cache.apply_node(
        "ADDED", {"metadata": {"name": "a"}, "status": {"allocatable": {"cpu": "96", "memory": "96Gi"}}}
    )
    bound = gpu_pod("x", {"nvidia.com/gpu": "2"}, node_name="a")
    bound["spec"]["containers"][0]["resources"]["requests"] |= {"cpu": "24", "memory": "8Gi"}
    cache.apply_pod("ADDED", bound)
    cache.apply_pod("ADDED", gpu_pod("y", {"nvidia.com/gpu": "2"}, node_name="b"))  # b gives no CPU
    assert learned_feed(cache.snapshot()) == (12000.0, 4096.0)


def test_nodes_of_one_shape_part_by_the_gpu_their_cpu_cannot_feed() -> None:
    # Same GPUs, same free: one shape. 4 GPUs held on each with 12 cores: 3 cores per GPU learned.
    # 'starved' has 6 cores left for its 4 free GPUs (2 stranded; the pod takes one of them),
    # 'roomy' 84 (none stranded): the pod goes where it strands nothing new.
    ext, cache = extender([node("starved", count=8), node("roomy", count=8)])
    for name, cpu in (("starved", "18"), ("roomy", "96")):
        cache.apply_node(
            "ADDED", {"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": "1Ti"}}}
        )
        held = gpu_pod(f"held-{name}", {"nvidia.com/gpu": "4"}, node_name=name)
        held["spec"]["containers"][0]["resources"]["requests"] |= {"cpu": "12", "memory": "1Gi"}
        cache.apply_pod("ADDED", held)
    states = cache.snapshot().states
    assert states[NodeName("starved")].shape_id == states[NodeName("roomy")].shape_id
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"}, annotations={POLICY: "fragmentation"})
    assert ext.prioritize(pod, ["starved", "roomy"]) == {"starved": 10, "roomy": 0}
    assert ext.prioritize(
        gpu_pod("q", {"nvidia.com/gpu": "1"}, annotations={POLICY: "spread"}), ["starved", "roomy"]
    ) == {
        "starved": 10,
        "roomy": 10,
    }
