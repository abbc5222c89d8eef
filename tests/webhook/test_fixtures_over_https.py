"""Every AdmissionReview fixture through the real HTTPS server; patched pods validated strictly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import offer_of
from tests.support.data import K8S_FIXTURES
from tests.support.k8s_openapi import default_schemas
from tests.webhook.conftest import RunningServer
from webhook.admission import answer
from webhook.review import allowed, denied, parse_review
from webhook.settings import WebhookSettings

FIXTURES = K8S_FIXTURES
REQUESTS = sorted(p for p in FIXTURES.glob("admissionreview-*.json") if "response" not in p.name)
POD = "io.k8s.api.core.v1.Pod"


def post(client: httpx.Client, review: dict[str, Any]) -> dict[str, Any]:
    # The API server appends its timeout to the configured path: the route must accept it.
    reply = client.post("/mutate?timeout=10s", content=json.dumps(review))
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    return body["response"]


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


def test_there_are_request_fixtures_to_replay() -> None:
    assert len(REQUESTS) >= 3


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.name)
def test_every_review_is_answered_for_its_uid_and_the_result_is_a_valid_pod(
    path: Path, client: httpx.Client
) -> None:
    review = json.loads(path.read_text())
    response = post(client, review)
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    pod = patched(review["request"]["object"], response)
    default_schemas().validate(pod, POD)


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.name)
def test_a_mutated_pod_sent_again_yields_no_patch(path: Path, client: httpx.Client) -> None:
    review = json.loads(path.read_text())
    review["request"]["object"] = patched(review["request"]["object"], post(client, review))
    assert "patch" not in post(client, review)


def test_the_job_pod_with_two_gpus_is_labelled_priced_and_routed(client: httpx.Client) -> None:
    review = json.loads((FIXTURES / "admissionreview-pod-create.json").read_text())
    pod = patched(review["request"]["object"], post(client, review))
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["gpu.kgm.io/team"] == "ml-training"  # no team given: the namespace
    assert labels["gpu.kgm.io/workload-type"] == "Development"
    assert labels["gpu.kgm.io/gpu-profile"] == "gpu"
    assert labels["job-name"] == "llama3-finetune"  # existing labels kept
    # Two whole GPUs, priced at the dearest model that offers whole GPUs (H100 NVL, 4.30/h).
    assert annotations["gpu.kgm.io/cost-per-hour"] == "8.6000"
    assert json.loads(annotations["gpu.kgm.io/original-request"]) == {
        "containers": {"trainer": {"nvidia.com/gpu": "2"}}
    }
    assert pod["spec"]["schedulerName"] == "kgm-scheduler"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "name" not in pod["metadata"]  # generateName pod: the name does not exist yet


def test_dry_run_gets_the_same_answer_as_a_real_create(client: httpx.Client) -> None:
    review = json.loads((FIXTURES / "admissionreview-pod-create-dryrun.json").read_text())
    dry = post(client, review)
    review["request"]["dryRun"] = False
    assert post(client, review) == dry
    pod = patched(review["request"]["object"], dry)
    assert pod["metadata"]["labels"]["gpu.kgm.io/gpu-profile"] == "mig-1g.10gb"
    assert pod["metadata"]["annotations"]["gpu.kgm.io/cost-per-hour"] == "0.5571"  # 1/7 of an H100


def test_an_update_is_allowed_untouched(client: httpx.Client) -> None:
    review = json.loads((FIXTURES / "admissionreview-pod-update.json").read_text())
    assert post(client, review) == {"uid": review["request"]["uid"], "allowed": True}


def test_a_profile_no_node_offers_is_denied_as_in_the_reference_reply(tmp_path: Path) -> None:
    """The deny fixture is the answer to the dry-run fixture in a cluster without 1g.10gb."""
    cluster = parse_cluster({"nodes": [{"name": "a", "gpus": [{"model": "A100-80GB", "count": 8}]}]})
    request = parse_review((FIXTURES / "admissionreview-pod-create-dryrun.json").read_bytes())
    result = answer(request, offer_of(cluster), WebhookSettings())
    expected = json.loads((FIXTURES / "admissionreview-response-deny.json").read_text())
    assert json.loads(result.body) == expected


def test_our_allow_reply_has_the_reference_shape() -> None:
    expected = json.loads((FIXTURES / "admissionreview-response-allow-patch.json").read_text())
    response = expected["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    ours = json.loads(allowed(response["uid"], ops, response["warnings"]))
    del expected["response"]["auditAnnotations"]  # we set none
    assert ours == expected


def test_our_deny_reply_has_the_reference_shape() -> None:
    expected = json.loads((FIXTURES / "admissionreview-response-deny.json").read_text())
    status = expected["response"]["status"]
    ours = denied(
        expected["response"]["uid"], status["message"], code=status["code"], reason=status["reason"]
    )
    assert json.loads(ours) == expected


def test_metrics_count_answers_by_operation_and_outcome(https_server: RunningServer) -> None:
    review = json.loads((FIXTURES / "admissionreview-pod-update.json").read_text())
    before = https_server.registry.get_sample_value(
        "kgm_admission_requests_total", {"operation": "UPDATE", "outcome": "unchanged"}
    )
    with https_server.client() as client:
        post(client, review)
        text = client.get("/metrics").text
    after = https_server.registry.get_sample_value(
        "kgm_admission_requests_total", {"operation": "UPDATE", "outcome": "unchanged"}
    )
    assert (after or 0) == (before or 0) + 1
    assert "kgm_admission_duration_seconds_bucket" in text
