"""GPU quotas at admission, over HTTPS through the production app: each limit kind refuses with a message
naming quota, limit, used and asked; a ResourceQuota on requests.nvidia.com/gpu still bites after the
rewrite to MIG; dry runs take nothing; reservations count; concurrent admissions race for the last unit
and exactly one wins."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from prometheus_client import CollectorRegistry

from inventory.domain.allocation import Allocation, Status
from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from inventory.domain.quota import QuotaAsk, Refusal
from inventory.live.quotas import QuotaBook
from inventory.live.static import cache_of
from kgm.server import build_app
from tests.webhook.conftest import RunningServer, serve_https
from tests.webhook.pods import container, gpus, pod
from webhook.settings import WebhookSettings

CLUSTER = load_cluster("demo")
OFFER = offer_of(CLUSTER)
MIG_3G = "nvidia.com/mig-3g.40gb"


@dataclass
class Books:
    """The book the running app judges with: each test puts a fresh one in."""

    book: QuotaBook | None = None
    reservations: list[Allocation] = field(default_factory=list)

    def admit(self, ask: QuotaAsk) -> list[Refusal]:
        assert self.book is not None
        return self.book.admit(ask)

    def fresh(self) -> QuotaBook:
        cache = cache_of(CLUSTER)
        self.reservations = []
        self.book = QuotaBook(
            snapshot=cache.snapshot,
            offer=lambda: OFFER,
            prices=CLUSTER.prices,
            catalogue=CLUSTER.catalogue,
            reservations=lambda: self.reservations,
            reservations_ttl_s=0.0,
        )
        return self.book


BOOKS = Books()


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    registry = CollectorRegistry()
    app = build_app(offer=lambda: OFFER, webhook=WebhookSettings(), registry=registry, quota=BOOKS.admit)
    with serve_https(app, Path(tmp_path_factory.mktemp("quota-tls")), registry) as server:
        yield server


@pytest.fixture
def book() -> QuotaBook:
    return BOOKS.fresh()


@pytest.fixture
def client(quota_server: RunningServer) -> Iterator[httpx.Client]:
    with quota_server.client() as client:
        yield client


def review(obj: dict[str, Any], *, dry_run: bool = False, namespace: str = "ml") -> dict[str, Any]:
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": obj,
        "dryRun": dry_run,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/mutate?timeout=10s", content=json.dumps(body))
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def gpuquota(team: str = "nlp", **limits: Any) -> dict[str, Any]:
    return {"metadata": {"name": "budget", "namespace": "ml"}, "spec": {"team": team, "limits": limits}}


def running(uid: str, limits: dict[str, str], node: str, team: str = "nlp") -> dict[str, Any]:
    body = pod(container("c", limits), labels={"gpu.kgm.io/team": team})
    body["metadata"] |= {"uid": uid, "name": uid}
    body["spec"]["nodeName"] = node
    body["status"] = {"phase": "Running"}
    return body


def team_pod(*containers: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return pod(*containers, annotations={"gpu.kgm.io/team": "nlp", **annotations})


# 3 whole A100-80GB (3 x 80 GB, 3 x 2.40/h) and 1 H100 3g.40gb (3/7, 40 GB, 3.90 x 3/7 = 1.6714/h)
HELD = [
    running("p1", {"nvidia.com/gpu": "3"}, "gpu-a100-01"),
    running("p2", {MIG_3G: "1"}, "gpu-h100-02"),
]


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"gpuEquivalents": 4},
            "team nlp: 3.43 of 4 GPU-equivalents used, this pod needs 1 (GpuQuota ml/budget)",
        ),
        (
            {"memoryGB": 300},
            "team nlp: 280 of 300 GB of GPU memory used, this pod needs 94 (GpuQuota ml/budget)",
        ),
        (
            {"costPerHour": 10},
            "team nlp: 8.87 of 10.00 USD per hour used, this pod needs 4.30 (GpuQuota ml/budget)",
        ),
        (
            {"costPerDay": 300},
            "team nlp: 212.91 of 300.00 USD per day used, this pod needs 103.20 (GpuQuota ml/budget)",
        ),
        (
            {"costPerMonth": 9000},
            "team nlp: 6476.14 of 9000.00 USD per month used, this pod needs 3139.00 (GpuQuota ml/budget)",
        ),
    ],
    ids=["gpu-equivalents", "memory", "cost-per-hour", "cost-per-day", "cost-per-month"],
)
def test_each_limit_kind_refuses_a_pod_past_it_with_a_message_naming_it(
    client: httpx.Client, book: QuotaBook, limits: dict[str, Any], message: str
) -> None:
    book.replace_gpuquotas([gpuquota(**limits)])
    book.replace_pods(HELD)
    # a whole GPU not yet placed counts the most any model offering it would: H100-94GB (94 GB, 4.30/h)
    response = post(client, review(team_pod(gpus(1))))
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden", "message": message}


def test_a_pod_within_every_limit_is_admitted_and_marked_with_its_admission(
    client: httpx.Client, book: QuotaBook
) -> None:
    book.replace_gpuquotas([gpuquota(gpuEquivalents=8, memoryGB=1000, costPerHour=100)])
    book.replace_pods(HELD)
    body = review(team_pod(gpus(1)))
    response = post(client, body)
    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(body["request"]["object"], ops)
    assert patched["metadata"]["annotations"]["gpu.kgm.io/quota-admission"] == body["request"]["uid"]
    assert patched["metadata"]["labels"]["gpu.kgm.io/team"] == "nlp"


def test_a_resourcequota_on_requests_nvidia_com_gpu_holds_after_the_rewrite_to_mig(
    client: httpx.Client, book: QuotaBook
) -> None:
    book.replace_resourcequotas(
        [
            {
                "metadata": {"name": "compute", "namespace": "ml"},
                "spec": {"hard": {"requests.nvidia.com/gpu": "1"}},
            }
        ]
    )
    # Kubeflow's profile quota: 1 GPU. Two 3g.40gb instances already hold 6/7 of a GPU.
    book.replace_pods(
        [
            running("a", {MIG_3G: "1"}, "gpu-h100-02", team="ml"),
            running("b", {MIG_3G: "1"}, "gpu-h100-02", team="ml"),
        ]
    )
    # asks nvidia.com/gpu: 1 with 20 GB: the webhook moves it to a 2g.20gb (2/7): past the quota
    response = post(client, review(pod(gpus(1), annotations={"gpu.kgm.io/memory-gb": "20"})))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "namespace ml: 0.86 of 1 GPU-equivalents used, this pod needs 0.29 "
        "(ResourceQuota ml/compute, requests.nvidia.com/gpu)"
    )
    # a 1g.10gb (1/7) takes the quota exactly to 1: admitted, as the MIG instance
    body = review(pod(gpus(1), annotations={"gpu.kgm.io/memory-gb": "10"}))
    response = post(client, body)
    assert response["allowed"] is True
    patched = jsonpatch.apply_patch(
        body["request"]["object"], json.loads(base64.b64decode(response["patch"]))
    )
    assert patched["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    # and nothing more fits, not even the smallest instance
    assert post(client, review(pod(gpus(1), annotations={"gpu.kgm.io/memory-gb": "10"})))["allowed"] is False


def test_a_dry_run_is_judged_but_takes_no_unit(client: httpx.Client, book: QuotaBook) -> None:
    book.replace_gpuquotas([gpuquota(gpuEquivalents=1)])
    assert post(client, review(team_pod(gpus(1)), dry_run=True))["allowed"] is True
    assert post(client, review(team_pod(gpus(1))))["allowed"] is True
    dry = post(client, review(team_pod(gpus(1)), dry_run=True))
    assert dry["allowed"] is False
    assert dry["status"]["message"].startswith("team nlp: 1 of 1 GPU-equivalents used, this pod needs 1")


def test_open_reservations_count_against_the_quota(client: httpx.Client, book: QuotaBook) -> None:
    book.replace_gpuquotas([gpuquota(gpuEquivalents=1)])
    BOOKS.reservations = [
        Allocation(
            id="r1",
            namespace="ml",
            pod="later",
            pod_uid=None,
            node="gpu-a100-01",
            resource="nvidia.com/gpu",
            count=1,
            gpu_model="A100-80GB",
            hourly_price=Decimal("2.40"),
            status=Status.RESERVED,
            start=datetime(2026, 12, 6, tzinfo=UTC),
            team="nlp",
        )
    ]
    response = post(client, review(team_pod(gpus(1))))
    assert response["status"]["message"].startswith("team nlp: 1 of 1 GPU-equivalents used, this pod needs 1")


def test_a_pod_outside_every_quota_is_not_judged(client: httpx.Client, book: QuotaBook) -> None:
    book.replace_gpuquotas([gpuquota(team="vision", gpuEquivalents=0)])
    assert post(client, review(team_pod(gpus(4))))["allowed"] is True


def test_concurrent_admissions_on_the_last_unit_over_https_have_exactly_one_winner(
    quota_server: RunningServer, book: QuotaBook
) -> None:
    book.replace_gpuquotas([gpuquota(gpuEquivalents=4)])
    book.replace_pods([running("p1", {"nvidia.com/gpu": "3"}, "gpu-a100-01")])
    racers = 12
    start = threading.Barrier(racers)
    allowed: list[bool] = []

    def race() -> None:
        with quota_server.client() as client:
            body = review(team_pod(gpus(1)))
            client.get("/healthz")  # the TLS connection is up before the start
            start.wait()
            allowed.append(post(client, body)["allowed"])

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(allowed) == [False] * (racers - 1) + [True]
