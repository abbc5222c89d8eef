"""An edited copy of a mutated pod is judged from its user's first ask (webhook/copies.py's rule)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from inventory.domain.offer import Offer
from tests.webhook.pods import apply, container, gpus, pod
from webhook.mutation import Admit, mutate_pod
from webhook.settings import WebhookSettings

SETTINGS = WebhookSettings()
MEM, USE_MIG, WORKLOAD = "gpu.kgm.io/memory-gb", "gpu.kgm.io/use-mig", "gpu.kgm.io/workload-type"
ORIGINAL, PROFILE = "gpu.kgm.io/original-request", "gpu.kgm.io/gpu-profile"


def mutate(p: dict[str, Any], offer: Offer) -> dict[str, Any]:
    return apply(p, mutate_pod(p, namespace="ml", offer=offer, settings=SETTINGS))


def limits(p: dict[str, Any], index: int = 0) -> dict[str, str]:
    result: dict[str, str] = p["spec"]["containers"][index]["resources"]["limits"]
    return result


def original(p: dict[str, Any]) -> Any:
    return json.loads(p["metadata"]["annotations"][ORIGINAL])


def copied(p: dict[str, Any], **annotations: str) -> dict[str, Any]:
    """What ``kubectl get -o yaml`` of the mutated pod, edited, gives ``kubectl create``."""
    result = copy.deepcopy(p)
    result["metadata"]["annotations"].update(annotations)
    return result


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param({MEM: "30"}, "nvidia.com/mig-3g.40gb", id="more memory: a larger instance"),
        pytest.param({MEM: "20"}, "nvidia.com/mig-2g.20gb", id="a little more: the next size"),
        pytest.param({USE_MIG: "false"}, "nvidia.com/gpu", id="use-mig false: the whole GPU back"),
        pytest.param({WORKLOAD: "Training"}, "nvidia.com/gpu", id="training: the whole GPU back"),
    ],
)
def test_an_edited_copy_is_judged_from_the_first_ask_and_keeps_it(
    edit: dict[str, str], expected: str, demo_offer: Offer
) -> None:
    first = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    assert limits(first) == {"nvidia.com/mig-1g.10gb": "1"}
    again = mutate(copied(first, **edit), demo_offer)
    assert limits(again) == {expected: "1"}
    assert again["spec"]["containers"][0]["resources"]["requests"] == {expected: "1"}
    assert original(again) == {"containers": {"cuda": {"nvidia.com/gpu": "1"}}}
    assert again["metadata"]["labels"][PROFILE] == expected.removeprefix("nvidia.com/")


def test_an_edited_copy_says_what_moved_and_is_then_left_alone(demo_offer: Offer) -> None:
    first = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    edited = copied(first, **{MEM: "30"})
    decision = mutate_pod(edited, namespace="ml", offer=demo_offer, settings=SETTINGS)
    assert isinstance(decision, Admit)
    assert decision.warnings == [
        "kgm: container cuda moved from nvidia.com/mig-1g.10gb to nvidia.com/mig-3g.40gb"
    ]
    again = apply(edited, decision)
    assert mutate_pod(again, namespace="ml", offer=demo_offer, settings=SETTINGS) == Admit()


def test_a_copy_whose_only_edit_is_not_about_gpus_keeps_its_instance(demo_offer: Offer) -> None:
    first = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    edited = copied(first, **{"gpu.kgm.io/team": "vision"})  # judged again: the fingerprint changed
    decision = mutate_pod(edited, namespace="ml", offer=demo_offer, settings=SETTINGS)
    assert isinstance(decision, Admit)
    assert decision.patch  # the team label changes...
    assert not [op for op in decision.patch if op["path"].startswith("/spec/containers")]  # ...not the GPU
    assert not decision.warnings
    assert original(apply(edited, decision)) == {"containers": {"cuda": {"nvidia.com/gpu": "1"}}}


def test_a_profile_the_user_chose_in_the_copy_is_their_new_ask(demo_offer: Offer) -> None:
    first = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    edited = copied(first)
    edited["spec"]["containers"][0] = container("cuda", {"nvidia.com/mig-3g.40gb": "1"})
    again = mutate(edited, demo_offer)
    assert limits(again) == {"nvidia.com/mig-3g.40gb": "1"}
    assert original(again) == {"containers": {"cuda": {"nvidia.com/mig-3g.40gb": "1"}}}


def test_a_container_added_to_the_copy_is_its_own_ask(demo_offer: Offer) -> None:
    first = mutate(pod(gpus(1), annotations={MEM: "10"}), demo_offer)
    edited = copied(first, **{MEM: "20"})
    edited["spec"]["containers"].append(gpus(1, "sidecar"))
    again = mutate(edited, demo_offer)
    assert limits(again, 0) == limits(again, 1) == {"nvidia.com/mig-2g.20gb": "1"}
    assert original(again) == {
        "containers": {"cuda": {"nvidia.com/gpu": "1"}, "sidecar": {"nvidia.com/gpu": "1"}}
    }


@pytest.mark.parametrize(
    "original_request",
    [
        pytest.param("not json", id="not JSON"),
        pytest.param("[1, 2]", id="not an object"),
        pytest.param('{"containers": 5}', id="kind not an object"),
        pytest.param('{"containers": {"cuda": {"nvidia.com/gpu": "2"}}}', id="first ask not one GPU"),
        pytest.param('{"initContainers": {"cuda": {"nvidia.com/gpu": "1"}}}', id="another kind"),
    ],
)
def test_an_original_request_kgm_did_not_write_is_not_trusted(
    original_request: str, demo_offer: Offer
) -> None:
    p = pod(
        container("cuda", {"nvidia.com/mig-1g.10gb": "1"}),
        annotations={MEM: "30", ORIGINAL: original_request},
        labels={PROFILE: "mig-1g.10gb"},
    )
    result = mutate(p, demo_offer)
    assert limits(result) == {"nvidia.com/mig-1g.10gb": "1"}
    assert original(result) == {"containers": {"cuda": {"nvidia.com/mig-1g.10gb": "1"}}}


def test_without_kgms_profile_label_the_instance_is_the_users_choice(demo_offer: Offer) -> None:
    p = pod(
        container("cuda", {"nvidia.com/mig-1g.10gb": "1"}),
        annotations={MEM: "30", ORIGINAL: '{"containers": {"cuda": {"nvidia.com/gpu": "1"}}}'},
        labels={PROFILE: "mig-2g.20gb"},
    )
    assert limits(mutate(p, demo_offer)) == {"nvidia.com/mig-1g.10gb": "1"}
