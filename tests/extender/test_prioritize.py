from __future__ import annotations

import pytest

from inventory.domain.model import NodeName
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


def test_fragmentation_keeps_mig_instances_for_the_requests_that_use_them() -> None:
    # A 1g.10gb pod: 'mixed' would lose the 1g it has beside a 3g, 'small' has plenty of 1g.
    nodes = [node("mixed", mig=["1g.10gb", "2g.20gb", "3g.40gb"]), node("small", mig=["1g.10gb"] * 7)]
    result = scores("fragmentation", {"nvidia.com/mig-1g.10gb": "1"}, nodes)
    assert result["small"] >= result["mixed"]


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
