"""The admission rule, as a table over the demo cluster (pure: no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import Offer, offer_of
from tests.webhook.pods import apply, container, gpus, pod
from webhook.mutation import Admit, Deny, mutate_pod
from webhook.settings import WebhookSettings

SETTINGS = WebhookSettings()
MEM, WORKLOAD, USE_MIG, TEAM = (
    "gpu.kgm.io/memory-gb",
    "gpu.kgm.io/workload-type",
    "gpu.kgm.io/use-mig",
    "gpu.kgm.io/team",
)


def mutate(p: dict[str, Any], offer: Offer) -> dict[str, Any]:
    return apply(p, mutate_pod(p, namespace="ml", offer=offer, settings=SETTINGS))


def limits(p: dict[str, Any], kind: str = "containers", index: int = 0) -> dict[str, str]:
    result: dict[str, str] = p["spec"][kind][index]["resources"]["limits"]
    return result


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param({MEM: "10", WORKLOAD: "Inference"}, "nvidia.com/mig-1g.10gb", id="10GB inference"),
        pytest.param({MEM: "18"}, "nvidia.com/mig-2g.20gb", id="18GB development by default"),
        pytest.param({MEM: "20"}, "nvidia.com/mig-2g.20gb", id="exactly a profile's size"),
        pytest.param({MEM: "30.5"}, "nvidia.com/mig-3g.40gb", id="decimal size"),
        pytest.param({MEM: "45"}, "nvidia.com/mig-3g.47gb", id="only the H100 NVL half fits"),
        pytest.param({USE_MIG: "true"}, "nvidia.com/mig-1g.10gb", id="use-mig alone takes the smallest"),
        pytest.param(
            {USE_MIG: "TRUE", WORKLOAD: "Training"}, "nvidia.com/mig-1g.10gb", id="explicit beats Training"
        ),
        pytest.param(
            {MEM: "10", WORKLOAD: "inference"}, "nvidia.com/mig-1g.10gb", id="workload case-insensitive"
        ),
    ],
)
def test_a_single_gpu_moves_to_the_smallest_offered_profile_that_fits(
    annotations: dict[str, str], expected: str, demo_offer: Offer
) -> None:
    result = mutate(pod(gpus(1), annotations=annotations), demo_offer)
    assert limits(result) == {expected: "1"}
    assert result["spec"]["containers"][0]["resources"]["requests"] == {expected: "1"}
    assert result["metadata"]["labels"]["gpu.kgm.io/gpu-profile"] == expected.removeprefix("nvidia.com/")


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({}, id="no memory, no use-mig"),
        pytest.param({MEM: "10", WORKLOAD: "Training"}, id="training keeps whole GPUs"),
        pytest.param({MEM: "10", USE_MIG: "false"}, id="use-mig false"),
    ],
)
def test_a_single_gpu_stays_whole_when_no_mig_is_wanted(
    annotations: dict[str, str], demo_offer: Offer
) -> None:
    result = mutate(pod(gpus(1), annotations=annotations), demo_offer)
    assert limits(result) == {"nvidia.com/gpu": "1"}
    assert result["metadata"]["labels"]["gpu.kgm.io/gpu-profile"] == "gpu"
    assert "gpu.kgm.io/mig-fallback-reason" not in result["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("p", "reason"),
    [
        pytest.param(
            pod(gpus(1), annotations={MEM: "50"}),
            "no MIG instance offered has 50 GB; the largest is nvidia.com/mig-3g.47gb (47 GB)",
            id="bigger than any instance",
        ),
        pytest.param(
            pod(gpus(2), annotations={USE_MIG: "true"}),
            "container cuda asks for 2 GPUs; multi-GPU requests are never turned into MIG",
            id="multi-GPU",
        ),
        pytest.param(
            pod(
                gpus(1),
                annotations={MEM: "45"},
                node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            ),
            "no MIG instances are offered on NVIDIA-A100-SXM4-80GB in this cluster",
            id="the chosen model has no MIG",
        ),
    ],
)
def test_when_nothing_fits_the_pod_keeps_whole_gpus_and_says_why(
    p: dict[str, Any], reason: str, demo_offer: Offer
) -> None:
    before = limits(p)
    result = mutate(p, demo_offer)
    assert limits(result) == before
    assert result["metadata"]["annotations"]["gpu.kgm.io/mig-fallback-reason"] == reason


def test_the_product_in_the_node_selector_narrows_the_choice(demo_offer: Offer) -> None:
    p = pod(gpus(1), annotations={MEM: "10"}, node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-NVL"})
    result = mutate(p, demo_offer)
    assert limits(result) == {"nvidia.com/mig-3g.47gb": "1"}
    # 3 of 7 compute slices of an H100 NVL at 4.30/h
    assert result["metadata"]["annotations"]["gpu.kgm.io/cost-per-hour"] == "1.8429"


def test_init_containers_are_rewritten_and_priced_by_the_effective_pod_request(demo_offer: Offer) -> None:
    p = pod(gpus(1, "train"), init=(gpus(1, "warmup"),), annotations={MEM: "10", WORKLOAD: "Inference"})
    result = mutate(p, demo_offer)
    assert limits(result, "initContainers") == {"nvidia.com/mig-1g.10gb": "1"}
    assert limits(result) == {"nvidia.com/mig-1g.10gb": "1"}
    # the init container's instance is handed on to the app container: the pod holds one, not two
    assert result["metadata"]["annotations"]["gpu.kgm.io/cost-per-hour"] == "0.5571"


def test_a_pod_without_gpus_is_left_alone(demo_offer: Offer) -> None:
    p = pod(container("web", {"cpu": "1"}), annotations={MEM: "not even a number"})
    assert mutate_pod(p, namespace="ml", offer=demo_offer, settings=SETTINGS) == Admit()


def test_labels_and_annotations_are_created_when_the_pod_has_none(demo_offer: Offer) -> None:
    result = mutate(pod(gpus(1)), demo_offer)
    assert result["metadata"]["labels"] == {
        "gpu.kgm.io/team": "ml",
        "gpu.kgm.io/workload-type": "Development",
        "gpu.kgm.io/gpu-profile": "gpu",
    }
    assert json.loads(result["metadata"]["annotations"]["gpu.kgm.io/original-request"]) == {
        "containers": {"cuda": {"nvidia.com/gpu": "1"}}
    }


@pytest.mark.parametrize(
    ("annotations", "labels", "team"),
    [
        pytest.param({TEAM: "vision"}, {TEAM: "nlp"}, "vision", id="annotation wins"),
        pytest.param({}, {TEAM: "nlp"}, "nlp", id="pod label next"),
        pytest.param({}, {}, "ml", id="namespace last"),
    ],
)
def test_the_team_label_comes_from_annotation_then_label_then_namespace(
    annotations: dict[str, str], labels: dict[str, str], team: str, demo_offer: Offer
) -> None:
    result = mutate(pod(gpus(1), annotations=annotations, labels=labels), demo_offer)
    assert result["metadata"]["labels"]["gpu.kgm.io/team"] == team


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        (None, "kgm-scheduler"),
        ("", "kgm-scheduler"),
        ("default-scheduler", "kgm-scheduler"),
        ("volcano", "volcano"),
    ],
)
def test_gpu_pods_are_routed_to_the_gpu_scheduler_unless_they_chose_another(
    scheduler: str | None, expected: str, demo_offer: Offer
) -> None:
    result = mutate(pod(gpus(1), scheduler=scheduler), demo_offer)
    assert result["spec"]["schedulerName"] == expected


def test_the_scheduler_name_is_configurable(demo_offer: Offer) -> None:
    p = pod(gpus(1))
    decision = mutate_pod(
        p, namespace="ml", offer=demo_offer, settings=WebhookSettings(scheduler_name="gpu-sched")
    )
    assert apply(p, decision)["spec"]["schedulerName"] == "gpu-sched"


@pytest.mark.parametrize(
    ("annotations", "named", "allowed"),
    [
        ({MEM: "0"}, MEM, "positive number"),
        ({MEM: "-4"}, MEM, "positive number"),
        ({MEM: "lots"}, MEM, "positive number"),
        ({MEM: "NaN"}, MEM, "positive number"),
        ({MEM: "200"}, MEM, "the largest GPU offered has 94 GB"),
        ({WORKLOAD: "Batch"}, WORKLOAD, "Training, Inference, Development"),
        ({USE_MIG: "yes"}, USE_MIG, '"true" or "false"'),
        ({TEAM: "ML Research"}, TEAM, "valid label value"),
    ],
)
def test_a_bad_annotation_is_denied_naming_it_and_what_is_allowed(
    annotations: dict[str, str], named: str, allowed: str, demo_offer: Offer
) -> None:
    decision = mutate_pod(
        pod(gpus(1), annotations=annotations), namespace="ml", offer=demo_offer, settings=SETTINGS
    )
    assert isinstance(decision, Deny)
    assert named in decision.message
    assert allowed in decision.message
    assert decision.code == 422


def test_an_empty_inventory_admits_gpu_pods_without_a_price(demo_offer: Offer) -> None:
    decision = mutate_pod(
        pod(gpus(1), annotations={MEM: "500"}), namespace="ml", offer=Offer(()), settings=SETTINGS
    )
    assert isinstance(decision, Admit)
    result = apply(pod(gpus(1), annotations={MEM: "500"}), decision)
    assert "gpu.kgm.io/cost-per-hour" not in result["metadata"]["annotations"]
    assert any("cost per hour unknown" in w for w in decision.warnings)


def test_a_cluster_without_mig_keeps_whole_gpus() -> None:
    offer = offer_of(parse_cluster({"nodes": [{"name": "a", "gpus": [{"model": "A100-80GB", "count": 2}]}]}))
    result = mutate(pod(gpus(1), annotations={USE_MIG: "true"}), offer)
    assert limits(result) == {"nvidia.com/gpu": "1"}
    assert result["metadata"]["annotations"]["gpu.kgm.io/mig-fallback-reason"] == (
        "no MIG instances are offered in this cluster"
    )
    assert result["metadata"]["annotations"]["gpu.kgm.io/cost-per-hour"] == "2.4000"


def test_an_edited_copy_of_a_mutated_pod_is_judged_again(demo_offer: Offer) -> None:
    once = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    assert mutate_pod(once, namespace="ml", offer=demo_offer, settings=SETTINGS) == Admit()
    once["metadata"]["annotations"][WORKLOAD] = "Training"
    again = mutate_pod(once, namespace="ml", offer=demo_offer, settings=SETTINGS)
    assert isinstance(again, Admit)
    assert {
        "op": "add",
        "path": "/metadata/labels/gpu.kgm.io~1workload-type",
        "value": "Training",
    } in again.patch
