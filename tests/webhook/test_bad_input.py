"""Bad input gets a clear answer and never a 500 or a hang."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from inventory.domain.offer import Offer
from kgm.server import build_app
from kgm.web.routes import mutate_endpoint
from tests.support.data import K8S_FIXTURES
from tests.webhook.pods import gpus, pod
from webhook.settings import WebhookSettings

FIXTURES = K8S_FIXTURES


def review(**request: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": "5b1c0a52-2f0e-4d7c-9a41-6f3d2c1b0a99",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "ml",
        "object": pod(gpus(1)),
        "dryRun": False,
    }
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def asgi_post(app: Any, body: bytes) -> httpx.Response:
    """POST to an ASGI app in-process (no server): for apps built with odd parts."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
            return await client.post("/mutate", content=body)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(b"{not json", "not JSON", id="not JSON"),
        pytest.param(b"[1, 2]", "not a JSON object", id="a list"),
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(
            json.dumps({**review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "apiVersion",
            id="wrong apiVersion",
        ),
        pytest.param(json.dumps({**review(), "kind": "Pod"}).encode(), "kind", id="wrong kind"),
        pytest.param(
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "no request",
            id="no request",
        ),
        pytest.param(json.dumps(review(uid="")).encode(), "no uid", id="empty uid"),
        pytest.param(json.dumps(review(uid=None)).encode(), "no uid", id="null uid"),
        pytest.param(json.dumps(review(kind="Pod")).encode(), "kind and operation", id="kind not an object"),
    ],
)
def test_a_malformed_review_gets_400_with_a_json_error(body: bytes, says: str, client: httpx.Client) -> None:
    reply = client.post("/mutate", content=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == 400
    assert says in error["message"]


def test_a_body_over_3_mib_gets_413(client: httpx.Client) -> None:
    reply = client.post("/mutate", content=b" " * (3 * 1024 * 1024 + 1))
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == 413


def test_a_large_body_without_content_length_is_cut_off_at_the_limit(client: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(64):
            yield b" " * 65536  # 4 MiB in all, streamed with chunked encoding

    reply = client.post("/mutate", content=chunks())
    assert reply.status_code == 413


def test_a_review_just_under_the_limit_is_answered(client: httpx.Client) -> None:
    body = review()
    body["request"]["object"]["metadata"]["annotations"] = {"filler": "x" * (3 * 1024 * 1024 - 4096)}
    reply = client.post("/mutate", content=json.dumps(body))
    assert reply.status_code == 200
    assert reply.json()["response"]["allowed"] is True


def test_get_is_not_allowed(client: httpx.Client) -> None:
    assert client.get("/mutate").status_code == 405


def test_a_pod_create_without_an_object_is_denied_not_crashed(client: httpx.Client) -> None:
    reply = client.post("/mutate", content=json.dumps(review(object=None)))
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"metadata": "nope", "spec": {"containers": [gpus(1)]}}, id="metadata a string"),
        pytest.param({"spec": {"containers": [gpus(1)]}}, id="no metadata"),
        pytest.param({"metadata": {}, "spec": {"containers": "x"}}, id="containers a string"),
        pytest.param(
            {"metadata": {}, "spec": {"containers": [{"name": "a", "resources": {"limits": []}}]}},
            id="limits a list",
        ),
        pytest.param(
            {"metadata": {"annotations": {"gpu.kgm.io/memory-gb": 12}}, "spec": {"containers": [gpus(1)]}},
            id="annotation not a string",
        ),
        pytest.param({"metadata": {}, "spec": {"containers": [gpus("1.5")]}}, id="fractional GPU"),
    ],
)
def test_odd_pods_get_a_well_formed_answer(obj: dict[str, Any], client: httpx.Client) -> None:
    reply = client.post("/mutate", content=json.dumps(review(object=obj)))
    assert reply.status_code == 200
    assert reply.json()["response"]["uid"] == review()["request"]["uid"]


def test_a_failure_inside_the_webhook_is_a_well_formed_denial(demo_offer: Offer) -> None:
    def broken() -> Offer:
        raise RuntimeError("inventory exploded")

    app = build_app(offer=broken, webhook=WebhookSettings(), registry=CollectorRegistry())
    reply = asgi_post(app, json.dumps(review()).encode())
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["reason"] == "InternalError"
    assert "inventory exploded" not in response["status"]["message"]  # internals stay in the logs


def test_a_body_that_never_arrives_times_out_instead_of_hanging(demo_offer: Offer) -> None:
    endpoint = mutate_endpoint(
        offer=lambda: demo_offer,
        settings=WebhookSettings(),
        registry=CollectorRegistry(),
        logger=logging.getLogger("test"),
        read_timeout=0.05,
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": "/mutate", "headers": []}
    asyncio.run(asyncio.wait_for(endpoint(scope, receive, send), timeout=5))
    assert sent[0]["status"] == 408
