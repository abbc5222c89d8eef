"""Every scheduler-extender fixture through the real app (`kgm serve`'s, over the demo cluster),
whose node names and layouts are the fixtures' own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from kgm.assembly import static_parts
from kgm.server import build_app
from kgm.settings import ServeSettings
from tests.extender.clusters import gpu_pod
from tests.support.data import K8S_FIXTURES

FIXTURES = K8S_FIXTURES


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Server:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inventory = static_parts(ServeSettings(inventory="demo"), self.registry)
        self.app = build_app(
            offer=self.inventory.offer,
            webhook=ServeSettings().webhook,
            registry=self.registry,
            extender=self.inventory.extender,
        )

    def post(self, verb: str, body: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="https://kgm"
            ) as c:
                return await c.post(f"/extender/{verb}", content=json.dumps(body))

        return asyncio.run(go())

    def hold(self, uid: str, node: str, resources: dict[str, str]) -> None:
        """A pod already running there (bound through the extender, as the scheduler would)."""
        pod = gpu_pod(uid, resources)
        assert self.post("filter", {"Pod": pod, "Nodes": None, "NodeNames": [node]}).json()["NodeNames"] == [
            node
        ]
        bound = self.post(
            "bind", {"PodName": pod["metadata"]["name"], "PodNamespace": "ml", "PodUID": uid, "Node": node}
        )
        assert bound.json() == {"Error": ""}


@pytest.fixture
def server() -> Server:
    return Server()


def test_filter_by_node_names_passes_nodes_with_room_and_gives_reasons_for_the_rest(server: Server) -> None:
    server.hold("other", "gpu-h100nvl-01", {"nvidia.com/gpu": "1"})
    reply = server.post("filter", fixture("extender-filter-args-nodecache.json")).json()
    assert reply["Nodes"] is None
    assert reply["NodeNames"] == ["gpu-a100-01", "gpu-h100-01"]
    # the reference reply's reason, in our words
    assert reply["FailedNodes"] == {"gpu-h100nvl-01": "2 whole GPUs requested, 1 free after reservations"}
    assert reply["FailedAndUnresolvableNodes"] == {}
    assert reply["Error"] == ""
    assert set(reply) == set(fixture("extender-filter-result-nodecache.json"))


def test_filter_with_full_node_objects_echoes_the_passing_nodes(server: Server) -> None:
    args = fixture("extender-filter-args.json")
    server.hold("big", "gpu-a100-01", {"nvidia.com/gpu": "8"})
    reply = server.post("filter", args).json()
    assert reply["NodeNames"] is None
    by_name = {n["metadata"]["name"]: n for n in args["Nodes"]["items"]}
    assert reply["Nodes"]["items"] == [by_name["gpu-h100-01"], by_name["gpu-h100nvl-01"]]
    assert reply["FailedNodes"] == {"gpu-a100-01": "2 whole GPUs requested, 0 free after reservations"}


def test_prioritize_scores_every_node_it_was_given(server: Server) -> None:
    reply = server.post("prioritize", fixture("extender-prioritize-args.json")).json()
    # In no particular order: kube-scheduler reads a HostPriorityList into a map by host (extender.memo).
    assert sorted(entry["Host"] for entry in reply) == ["gpu-a100-01", "gpu-h100-01"]
    assert all(set(entry) == {"Host", "Score"} and 0 <= entry["Score"] <= 10 for entry in reply)


def test_bind_after_filter_succeeds_and_a_retry_is_idempotent(server: Server) -> None:
    server.post("filter", fixture("extender-filter-args-nodecache.json"))
    for _ in range(2):
        assert server.post("bind", fixture("extender-bind-args.json")).json() == fixture(
            "extender-bind-result.json"
        )
    three = {"Pod": gpu_pod("three", {"nvidia.com/gpu": "3"}), "Nodes": None, "NodeNames": ["gpu-h100-01"]}
    assert server.post("filter", three).json()["FailedNodes"] == {
        "gpu-h100-01": "3 whole GPUs requested, 2 free after reservations"  # 4 whole, 2 bound once
    }


def test_preemption_keeps_the_victim_that_frees_the_gpus(server: Server) -> None:
    server.hold("7d9f1b3e-5a7c-4e9b-8d2f-4a6c8e0b2d4f", "gpu-a100-01", {"nvidia.com/gpu": "8"})
    reply = server.post("preempt", fixture("extender-preemption-args-nodecache.json")).json()
    assert reply == fixture("extender-preemption-result.json")


def test_the_extender_counts_its_calls(server: Server) -> None:
    server.post("filter", fixture("extender-filter-args-nodecache.json"))
    assert (
        server.registry.get_sample_value("kgm_extender_requests_total", {"verb": "filter", "outcome": "ok"})
        == 1
    )
