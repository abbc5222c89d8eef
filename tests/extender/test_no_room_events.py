"""The NoGpuRoom Event: a pod no node can take is told why, once per filter call that passes no node,
through the plain and the encoded filter alike, and over HTTP through the production app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from extender import wire
from extender.events import NoRoomEvents, with_no_room_events
from extender.service import FilterOutcome, Victims
from inventory.domain.events import PodRef, RecordedEvents
from kgm.assembly import static_parts
from kgm.server import build_app
from kgm.settings import ServeSettings
from tests.extender.clusters import extender, gpu_pod, node

MIG = "nvidia.com/mig-3g.40gb"
NODES = [
    node("busy-1", mig=["1g.10gb", "1g.10gb"]),
    node("busy-2", mig=["1g.10gb", "1g.10gb"]),
    node("whole", count=1),
]


def test_a_pod_no_node_can_take_gets_one_event_saying_why() -> None:
    service, _ = extender(NODES)
    events = RecordedEvents()
    outcome = NoRoomEvents(service, events).filter(gpu_pod("u1", {MIG: "1"}), ["busy-1", "busy-2", "whole"])
    assert outcome.passed == []
    [event] = events.events
    assert (event.pod, event.reason, event.type, event.action) == (
        PodRef("ml", "pod-u1", "u1"),
        "NoGpuRoom",
        "Warning",
        "Filter",
    )
    assert event.message == "0/3 nodes can take the pod: 3 no mig-3g.40gb here"


@pytest.mark.parametrize(
    ("pod", "nodes"),
    [
        pytest.param(gpu_pod("u2", {"nvidia.com/gpu": "1"}), ["busy-1", "whole"], id="a node passes"),
        pytest.param(gpu_pod("u3", {"cpu": "1"}), ["busy-1"], id="not a GPU pod"),
        pytest.param(gpu_pod("u4", {MIG: "1"}), [], id="no node asked about"),
    ],
)
def test_no_event_when_there_is_room_or_nothing_to_say(pod: dict[str, Any], nodes: list[str]) -> None:
    service, _ = extender(NODES)
    events = RecordedEvents()
    NoRoomEvents(service, events).filter(pod, nodes)
    assert events.events == []


class Encoded:
    """A service that encodes its own filter replies (as GpuExtender's memo path does)."""

    def __init__(self, outcome: FilterOutcome) -> None:
        self.outcome = outcome

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        return self.outcome

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        return {}

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        return None

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        return {}

    def filter_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        return wire.filter_result(call, self.outcome), len(self.outcome.passed)

    def prioritize_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        return b"[]", 0


def test_the_encoded_filter_reply_is_read_back_for_its_reasons() -> None:
    outcome = FilterOutcome(
        passed=[],
        failed={"a": "no free mig-3g.40gb: 0 of 2 free"},
        unresolvable={"b": "inventory stale for 120 s (limit 90 s)"},
    )
    events = RecordedEvents()
    service = with_no_room_events(Encoded(outcome), events)
    call = wire.ExtenderCall(
        pod=gpu_pod("u5", {MIG: "1"}), node_names=["a", "b"], nodes=None, node_cache_capable=True
    )
    body, passed = service.filter_reply(call)  # type: ignore[attr-defined]
    assert passed == 0 and body == wire.filter_result(call, outcome)  # the reply itself untouched
    assert [e.message for e in events.events] == [
        "0/2 nodes can take the pod: 1 inventory stale, 1 no free mig-3g.40gb"
    ]


def test_a_recorder_that_fails_never_fails_the_filter() -> None:
    class Broken:
        def record(self, event: object) -> None:
            raise RuntimeError("boom")

    service, _ = extender(NODES)
    outcome = NoRoomEvents(service, Broken()).filter(gpu_pod("u7", {MIG: "1"}), ["busy-1"])
    assert outcome.passed == [] and outcome.unresolvable


def test_a_plain_service_stays_plain() -> None:
    service, _ = extender(NODES)
    wrapped = with_no_room_events(service, RecordedEvents())
    assert hasattr(wrapped, "filter_reply") == hasattr(service, "filter_reply")


def test_over_http_the_production_app_records_the_event() -> None:
    registry = CollectorRegistry()
    parts = static_parts(ServeSettings(inventory="demo"), registry)
    events = RecordedEvents()
    app = build_app(
        offer=parts.offer,
        webhook=ServeSettings().webhook,
        registry=registry,
        extender=with_no_room_events(parts.extender, events),
    )
    pod = gpu_pod("u6", {"nvidia.com/mig-7g.80gb": "1"})  # no demo node has one

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://kgm") as c:
            return await c.post(
                "/extender/filter",
                content=json.dumps({"Pod": pod, "Nodes": None, "NodeNames": ["gpu-a100-01"]}),
            )

    reply = asyncio.run(post())
    assert reply.status_code == 200 and reply.json()["NodeNames"] == []
    assert [(e.pod.name, e.reason) for e in events.events] == [("pod-u6", "NoGpuRoom")]
    assert events.events[0].message.startswith("0/1 nodes can take the pod: 1 ")
