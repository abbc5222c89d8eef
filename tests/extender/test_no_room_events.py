"""The NoGpuRoom Event: a pod no node can take is told why, once per filter call that passes no node,
through the plain and the encoded filter alike, and over HTTP through the production app; the encoded
filter's summary comes from the memo's counts, never from reading the reply back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from extender import wire
from extender.events import NoRoomEvents, with_no_room_events
from extender.service import FilterOutcome, Victims
from inventory.domain.events import NoEvents, PodRef, RecordedEvents, no_room_message
from inventory.domain.model import NodeName
from kgm.assembly import static_parts
from kgm.server import build_app
from kgm.settings import ServeSettings
from tests.extender.clusters import extender, gpu_pod, node
from tests.extender.test_memo import layout, make_cache, make_extender
from tests.inventory.gpunodes import Clock, gpunode

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
    """A service that encodes its own filter replies and explains them (as GpuExtender's memo path
    does); its reply is never read back."""

    def __init__(self, outcome: FilterOutcome) -> None:
        self.outcome = outcome
        self.replies = 0

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        return self.outcome

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        return {}

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        return None

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        return {}

    def filter_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        body, passed, _ = self.explained_filter_reply(call)
        return body, passed

    def explained_filter_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int, Mapping[str, int]]:
        self.replies += 1
        # Not the reply's reasons: an Event built by reading the reply back would say "no room".
        kinds = {"no free mig-3g.40gb": 1, "inventory stale": 1} if not self.outcome.passed else {}
        return b"not read back", len(self.outcome.passed), kinds

    def prioritize_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        return b"[]", 0


def names_call(p: dict[str, Any], names: list[str]) -> wire.ExtenderCall:
    return wire.ExtenderCall(pod=p, node_names=names, nodes=None, node_cache_capable=True)


def test_the_encoded_filter_is_summarised_from_the_services_counts_not_its_reply() -> None:
    events = RecordedEvents()
    service = with_no_room_events(Encoded(FilterOutcome(passed=[])), events)
    body, passed = service.filter_reply(names_call(gpu_pod("u5", {MIG: "1"}), ["a", "b"]))  # type: ignore[attr-defined]
    assert (body, passed) == (b"not read back", 0)  # the reply itself untouched
    assert [e.message for e in events.events] == [
        "0/2 nodes can take the pod: 1 inventory stale, 1 no free mig-3g.40gb"
    ]


@pytest.mark.parametrize("service", [Encoded(FilterOutcome(passed=[])), extender(NODES)[0]])
def test_with_no_one_to_tell_the_service_is_not_decorated(service: Any) -> None:
    assert with_no_room_events(service, NoEvents()) is service


def test_the_memos_summary_is_the_one_the_reasons_give_after_each_change() -> None:
    """The memo counts kinds of reason as it judges: after nodes fill, lose their inventory (a reason
    naming the node) and go stale (a reason giving the age), the Event says what the full reasons say."""
    clock = Clock()
    names = [f"n{i}" for i in range(8)]
    cache = make_cache(clock, names)
    events = RecordedEvents()
    service = with_no_room_events(make_extender(cache, clock), events)
    p = gpu_pod("u8", {"nvidia.com/gpu": "2"})
    changes: list[Callable[[], object]] = [
        lambda: None,
        lambda: cache.try_assume("a0", NodeName("n0"), {"nvidia.com/gpu": 2}, lambda shape: None),
        lambda: cache.try_assume("a2", NodeName("n2"), {"nvidia.com/gpu": 2}, lambda shape: None),
        lambda: cache.apply_gpunode("DELETED", gpunode("n5", layout(5))),
        lambda: clock.advance(100),  # every node stale
        lambda: clock.advance(3),
    ]
    expected: list[str] = []
    for change in changes:
        change()
        outcome = make_extender(cache, clock).filter(p, names)
        before = len(events.events)
        service.filter_reply(names_call(p, names))  # type: ignore[attr-defined]
        if outcome.passed:
            assert len(events.events) == before
        else:
            expected.append(no_room_message(len(names), {**outcome.failed, **outcome.unresolvable}))
    assert len(expected) >= 2  # no-room calls happened, stale ones among them
    assert [e.message for e in events.events] == expected


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
