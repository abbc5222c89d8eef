"""The extender's HTTP app in-process (httpx over ASGI), with a fake service behind the Protocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Message

from extender import wire
from extender.service import FilterOutcome, Victims
from kgm.web.routes import build_extender_app
from tests.support.data import K8S_FIXTURES

FIXTURES = K8S_FIXTURES
REASON = "gpu-manager: 2 whole GPUs requested, 1 free after reservations"
VERBS = ["filter", "prioritize", "bind", "preempt"]
ARGS = {
    "filter": "extender-filter-args-nodecache.json",
    "prioritize": "extender-prioritize-args.json",
    "bind": "extender-bind-args.json",
    "preempt": "extender-preemption-args-nodecache.json",
}
RESULTS = {
    "filter": "extender-filter-result-nodecache.json",
    "prioritize": "extender-prioritize-result.json",
    "bind": "extender-bind-result.json",
    "preempt": "extender-preemption-result.json",
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class FakeService:
    """Answers as the result fixtures do; ``broken`` makes every verb raise; records what it got."""

    broken: bool = False
    bind_error: str | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def _record(self, verb: str, args: Any) -> None:
        self.calls.append((verb, args))
        if self.broken:
            raise RuntimeError(f"{verb} exploded")

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        self._record("filter", list(node_names))
        return FilterOutcome(
            passed=[n for n in node_names if "nvl" not in n], failed={"gpu-h100nvl-01": REASON}
        )

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        self._record("prioritize", list(node_names))
        return {"gpu-a100-01": 3, "gpu-h100-01": 8}

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        self._record("bind", (namespace, name, uid, node))
        return self.bind_error

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        self._record("preempt", dict(victims))
        return dict(victims)


@dataclass
class Harness:
    service: FakeService
    registry: CollectorRegistry
    app: Any

    def request(self, method: str, verb: str, content: Any = b"") -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
                return await client.request(method, f"/extender/{verb}", content=content)

        return asyncio.run(go())

    def post(self, verb: str, content: Any) -> httpx.Response:
        return self.request("POST", verb, content)

    def count(self, verb: str, outcome: str) -> float | None:
        return self.registry.get_sample_value(
            "kgm_extender_requests_total", {"verb": verb, "outcome": outcome}
        )


def harness(service: FakeService | None = None, **options: Any) -> Harness:
    service = service or FakeService()
    registry = CollectorRegistry()
    logger = logging.getLogger("tests.extender")
    app = build_extender_app(service, registry=registry, logger=logger, **options)
    return Harness(service=service, registry=registry, app=app)


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_answers_the_fixture_call_with_the_fixture_reply(verb: str) -> None:
    h = harness()
    reply = h.post(verb, fixture(ARGS[verb]))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == orjson.loads(fixture(RESULTS[verb]))
    assert [name for name, _ in h.service.calls] == [verb]
    assert h.count(verb, "ok") == 1
    assert h.registry.get_sample_value("kgm_extender_duration_seconds_count", {"verb": verb}) == 1


def test_bind_passes_the_pod_and_node_to_the_service_and_reports_its_refusal() -> None:
    h = harness(FakeService(bind_error="pod ml-training/llama3-finetune-x7k2p is gone"))
    reply = h.post("bind", fixture(ARGS["bind"]))
    assert (reply.status_code, reply.json()) == (
        200,
        {"Error": "pod ml-training/llama3-finetune-x7k2p is gone"},
    )
    uid = "3b9d6f1a-2c4e-4f8a-b6d0-1e3c5a7b9d2f"
    assert h.service.calls == [("bind", ("ml-training", "llama3-finetune-x7k2p", uid, "gpu-h100-01"))]
    assert h.count("bind", "refused") == 1


def test_filter_with_full_nodes_echoes_the_passing_nodes() -> None:
    document = orjson.loads(fixture("extender-filter-args.json"))
    reply = harness().post("filter", fixture("extender-filter-args.json")).json()
    assert reply["NodeNames"] is None
    assert reply["Nodes"] == {"metadata": {}, "items": document["Nodes"]["items"][:2]}
    assert reply["FailedNodes"] == {"gpu-h100nvl-01": REASON}


def test_lower_cased_call_keys_are_read() -> None:
    body = orjson.dumps({"podname": "p", "podnamespace": "ns", "poduid": "u", "node": "n"})
    h = harness()
    assert h.post("bind", body).json() == {"Error": ""}
    assert h.service.calls == [("bind", ("ns", "p", "u", "n"))]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]"], ids=["not JSON", "empty", "an array"])
def test_bodies_that_are_not_json_objects_get_400(verb: str, body: bytes) -> None:
    h = harness()
    reply = h.post(verb, body)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == 400
    assert "body is not" in reply.json()["error"]["message"]
    assert h.service.calls == []
    assert h.count(verb, "bad_request") == 1


NO_POD_REPLIES = {
    "filter": {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": "no Pod in the call",
    },
    "bind": {"Error": "PodName is missing or not a non-empty string"},
    "preempt": {"NodeNameToMetaVictims": {}, "Error": "no Pod in the call"},
}


@pytest.mark.parametrize("verb", ["filter", "bind", "preempt"])
def test_a_call_with_unusable_content_gets_200_with_the_error_in_the_reply(verb: str) -> None:
    h = harness()
    reply = h.post(verb, orjson.dumps({"NodeNames": ["a"], "NodeNameToMetaVictims": {}, "PodNamespace": "x"}))
    assert (reply.status_code, reply.json()) == (200, NO_POD_REPLIES[verb])
    assert h.service.calls == []
    assert h.count(verb, "invalid") == 1


def test_a_prioritize_call_with_unusable_content_gets_400_as_its_reply_has_no_error_field() -> None:
    h = harness()
    reply = h.post("prioritize", orjson.dumps({"NodeNames": ["a"]}))
    assert reply.status_code == 400
    assert reply.json() == {"error": {"code": 400, "message": "no Pod in the call"}}
    assert h.count("prioritize", "invalid") == 1


@pytest.mark.parametrize("verb", VERBS)
def test_a_service_exception_is_logged_and_answered_without_a_hang(
    verb: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(FakeService(broken=True))
    with caplog.at_level(logging.ERROR, logger="tests.extender"):
        reply = h.post(verb, fixture(ARGS[verb]))
    if verb == "prioritize":
        assert reply.status_code == 500
        assert reply.json() == {"error": {"code": 500, "message": wire.INTERNAL_ERROR}}
    else:
        assert reply.status_code == 200
        assert reply.json()["Error"] == wire.INTERNAL_ERROR
    if verb == "preempt":
        assert reply.json()["NodeNameToMetaVictims"] == {}
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "extender.error"]
    assert (record.levelno, getattr(record, "verb", None), record.exc_info is not None) == (
        logging.ERROR,
        verb,
        True,
    )
    assert h.count(verb, "error") == 1


@pytest.mark.parametrize("verb", VERBS)
def test_bodies_over_the_limit_get_413_declared_or_streamed(verb: str) -> None:
    h = harness(max_body_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    declared = h.post(verb, fixture(ARGS["filter"]))
    streamed = h.post(verb, chunks())
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert "larger than 1000 bytes" in declared.json()["error"]["message"]
    assert h.service.calls == []


@pytest.mark.parametrize("verb", VERBS)
def test_other_methods_get_a_json_405(verb: str) -> None:
    reply = harness().request("GET", verb)
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json()["error"]["code"] == 405


def test_a_body_that_never_comes_gets_408() -> None:
    h = harness(read_timeout=0.05)
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/extender/filter", "headers": [], "query_string": b""}
    asyncio.run(asyncio.wait_for(h.app(scope, receive, send), timeout=5))
    assert sent[0]["status"] == 408
    assert h.count("filter", "bad_request") == 1


def test_filter_logs_at_debug_and_bind_at_info(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.DEBUG, logger="tests.extender"):
        h.post("filter", fixture(ARGS["filter"]))
        h.post("bind", fixture(ARGS["bind"]))
    lines = {getattr(r, "event", None): r for r in caplog.records}
    filtered = lines["extender.filter"]
    assert filtered.levelno == logging.DEBUG
    assert getattr(filtered, "pod", None) == "ml-training/llama3-finetune-x7k2p"
    assert (getattr(filtered, "nodes", None), getattr(filtered, "passed", None)) == (3, 2)
    assert lines["extender.bind"].levelno == logging.INFO
    assert getattr(lines["extender.bind"], "node", None) == "gpu-h100-01"


def test_without_a_registry_no_metrics_are_kept() -> None:
    app = build_extender_app(FakeService())
    reply = asyncio.run(_post(app, "/extender/bind", fixture(ARGS["bind"])))
    assert reply.json() == {"Error": ""}


async def _post(app: Any, path: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://kgm") as client:
        return await client.post(path, content=body)
