from __future__ import annotations

import pytest

from inventory.domain.demand import demand_of
from inventory.domain.model import NodeName
from tests.extender.clusters import extender, gpu_pod, node
from tests.inventory.gpunodes import gpu, gpunode

HALVES = ["3g.40gb", "3g.40gb"]


def test_a_pod_without_gpus_passes_everywhere_even_where_nothing_is_known() -> None:
    ext, _ = extender([node("a")])
    outcome = ext.filter(gpu_pod("p", {"cpu": "1"}), ["a", "unknown"])
    assert outcome.passed == ["a", "unknown"]


@pytest.mark.parametrize(
    ("resources", "annotations", "passed", "failed", "unresolvable"),
    [
        pytest.param(
            {"nvidia.com/mig-3g.40gb": "1"},
            {},
            ["mig"],
            {},
            {"whole": "no mig-3g.40gb here: 0 exist, 1 needed"},
            id="MIG profile only where it exists",
        ),
        pytest.param(
            {"nvidia.com/mig-3g.40gb": "3"},
            {},
            [],
            {},
            {
                "whole": "no mig-3g.40gb here: 0 exist, 3 needed",
                "mig": "no mig-3g.40gb here: 2 exist, 3 needed",
            },
            id="more instances than the node has",
        ),
        pytest.param(
            {"nvidia.com/gpu": "2"},
            {},
            ["whole"],
            {},
            {"mig": "2 whole GPUs requested, node has 0"},
            id="whole GPUs",
        ),
        pytest.param(
            {"nvidia.com/gpu": "1"},
            {"gpu.kgm.io/memory-gb": "90"},
            ["nvl"],
            {},
            {
                "whole": "1 whole GPUs with 90 GB requested, node has 0",
                "mig": "1 whole GPUs with 90 GB requested, node has 0",
            },
            id="memory per GPU",
        ),
    ],
)
def test_nodes_pass_or_fail_with_a_reason(
    resources: dict[str, str],
    annotations: dict[str, str],
    passed: list[str],
    failed: dict[str, str],
    unresolvable: dict[str, str],
) -> None:
    ext, _ = extender([node("whole", count=2), node("mig", mig=HALVES), node("nvl", model="H100-94GB")])
    names = ["whole", "mig"] + (["nvl"] if "gpu.kgm.io/memory-gb" in annotations else [])
    outcome = ext.filter(gpu_pod("p", resources, annotations=annotations), names)
    assert (outcome.passed, outcome.failed, outcome.unresolvable) == (passed, failed, unresolvable)


def test_capacity_held_by_other_pods_is_a_resolvable_failure() -> None:
    ext, cache = extender([node("mig", mig=HALVES)])
    cache.apply_pod("ADDED", gpu_pod("a", {"nvidia.com/mig-3g.40gb": "1"}, node_name="mig"))
    cache.assume("b", NodeName("mig"), {"nvidia.com/mig-3g.40gb": 1})
    outcome = ext.filter(gpu_pod("p", {"nvidia.com/mig-3g.40gb": "1"}), ["mig"])
    assert outcome.failed == {"mig": "no free mig-3g.40gb: 0 of 2 free"}


def test_the_product_in_the_node_selector_is_checked_against_the_live_inventory() -> None:
    ext, _ = extender([node("h100", count=2), node("a100", model="A100-80GB", count=2)])
    pod = gpu_pod(
        "p", {"nvidia.com/gpu": "1"}, node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    )
    outcome = ext.filter(pod, ["h100", "a100"])
    assert outcome.passed == ["a100"]
    assert outcome.unresolvable == {
        "h100": "node has H100-80GB; the pod asks for nvidia.com/gpu.product nvidia-a100-sxm4-80gb"
    }


def test_the_products_in_a_required_node_affinity_are_honoured() -> None:
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"})
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-NVL"]}
                        ]
                    },
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA H200"]}
                        ]
                    },
                ]
            }
        }
    }
    assert demand_of(pod).products == frozenset({"nvidia-h100-nvl", "nvidia h200"})


def test_unknown_and_unhealthy_nodes_are_unresolvable_with_what_to_do() -> None:
    ext, cache = extender([node("a")])
    cache.apply_gpunode(
        "MODIFIED",
        gpunode(
            "a",
            [gpu(0, node="a")],
            generation=2,
            unhealthy={"GPU-a-0": "XID 79 (GPU has fallen off the bus)"},
        ),
    )
    outcome = ext.filter(gpu_pod("p", {"nvidia.com/gpu": "1"}), ["a", "ghost"])
    assert outcome.unresolvable == {
        "a": "1 whole GPUs requested, node has 0; GPU-a-0… unhealthy: XID 79 (GPU has fallen off the bus)",
        "ghost": "no GPU inventory for node ghost: is kgm-agent running there?",
    }
