"""Agent and cache end to end, through the official client against the Kubernetes emulator:
publish, update, a silent node turning stale, a 410 in the watch stream, a restart of the cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import CacheSettings
from inventory.live.cache import InventoryCache, LiveOffer
from inventory.live.metrics import InventoryCollector
from inventory.live.reflector import Reflector
from inventory.live.watches import cache_reflectors
from inventory.node.agent import Agent, AgentSettings
from inventory.node.fake_gpu import FakeGpuSource
from inventory.node.health import HealthTracker
from tests.support.kube_emulator import GPUNODES, PODS, KubeEmulator, eventually

NODE = NodeName("gpu-h100-01")


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class LiveCache:
    def __init__(self, kube: KubeEmulator, clock: Clock) -> None:
        self.cache = InventoryCache(
            catalogue=builtin_catalogue(), settings=CacheSettings(stale_after_s=90), clock=clock
        )
        self.stop = threading.Event()
        self.reflectors: list[Reflector] = cache_reflectors(
            kube.new_client(), self.cache, watch_timeout_seconds=1
        )
        for reflector in self.reflectors:
            threading.Thread(target=reflector.run, args=(self.stop,), daemon=True).start()
        for reflector in self.reflectors:
            assert reflector.has_synced.wait(5)

    def capacity(self) -> Any:
        return self.cache.snapshot().capacity(NODE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source() -> FakeGpuSource:
    return FakeGpuSource.from_cluster_file("demo", NODE)


@pytest.fixture
def agent(kube_emulator: KubeEmulator, source: FakeGpuSource) -> Agent:
    return Agent(
        node_name=NODE,
        source=source,
        store=kube_emulator.client,
        assignments=None,
        health=HealthTracker(),
        catalogue=builtin_catalogue(),
        settings=AgentSettings(heartbeat_s=0),
    )


@pytest.fixture
def live(kube_emulator: KubeEmulator, agent: Agent, clock: Clock) -> Iterator[LiveCache]:
    agent.tick()
    live = LiveCache(kube_emulator, clock)
    yield live
    live.stop.set()


def test_the_agent_publishes_and_the_cache_sees_the_node(
    kube_emulator: KubeEmulator, live: LiveCache
) -> None:
    stored = kube_emulator.stored(GPUNODES, NODE)
    assert stored is not None
    assert stored["status"]["heartbeatGeneration"] == 1
    eventually(lambda: NODE in live.cache.snapshot().nodes)
    capacity = live.capacity()
    assert capacity.full_gpus_total == 4
    assert dict(capacity.mig_free) == {
        "nvidia.com/mig-1g.10gb": 8,
        "nvidia.com/mig-2g.20gb": 4,
        "nvidia.com/mig-3g.40gb": 4,
    }


def test_an_xid_reaches_the_cache_through_the_watch(
    live: LiveCache, agent: Agent, source: FakeGpuSource
) -> None:
    source.fail_device(0)
    agent.tick()
    eventually(lambda: live.capacity().full_gpus_total == 3)
    gpu = live.cache.snapshot().nodes[NODE].gpunode.inventory.gpus[0]
    assert (gpu.healthy, gpu.unhealthy_reason) == (False, "GPU is lost")


def test_a_bound_pod_holds_capacity_and_releases_it_when_deleted(
    kube_emulator: KubeEmulator, live: LiveCache
) -> None:
    pod = {
        "metadata": {"name": "train-1", "namespace": "ml"},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        },
    }
    kube_emulator.create(PODS, pod)
    eventually(lambda: live.capacity().full_gpus_free == 2)
    kube_emulator.delete(PODS, "train-1", namespace="ml")
    eventually(lambda: live.capacity().full_gpus_free == 4)


def test_a_silent_node_turns_stale(live: LiveCache, clock: Clock, agent: Agent) -> None:
    eventually(lambda: NODE in live.cache.snapshot().nodes)
    clock.offset += 95
    capacity = live.capacity()
    assert not capacity.schedulable
    assert capacity.reason is not None and capacity.reason.startswith("inventory stale for 9")
    agent.tick()  # the agent speaks again: a new generation makes the node fresh
    eventually(lambda: live.capacity().schedulable)


def test_a_410_in_the_watch_leads_to_a_relist_and_nothing_is_missed(
    kube_emulator: KubeEmulator, live: LiveCache, agent: Agent, source: FakeGpuSource
) -> None:
    gpunodes = live.reflectors[0]
    kube_emulator.inject_watch_gone(GPUNODES)
    source.fail_device(1)
    agent.tick()
    eventually(lambda: gpunodes.relists >= 1 and live.capacity().full_gpus_total == 3)


def test_a_restarted_cache_loses_nothing(
    kube_emulator: KubeEmulator, live: LiveCache, clock: Clock, source: FakeGpuSource, agent: Agent
) -> None:
    kube_emulator.create(
        PODS,
        {
            "metadata": {"name": "serve-1", "namespace": "ml"},
            "spec": {
                "nodeName": NODE,
                "containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}
                ],
            },
        },
    )
    source.fail_device(2)
    agent.tick()
    eventually(
        lambda: (
            live.capacity().mig_free["nvidia.com/mig-3g.40gb"] == 3 and live.capacity().full_gpus_total == 3
        )
    )
    before = live.capacity()
    live.stop.set()
    restarted = LiveCache(kube_emulator, clock)
    try:
        after = restarted.capacity()
        assert (after.full_gpus_total, after.full_gpus_free, dict(after.mig_free)) == (
            before.full_gpus_total,
            before.full_gpus_free,
            dict(before.mig_free),
        )
    finally:
        restarted.stop.set()


def test_the_webhook_offer_and_the_metrics_come_from_the_cache(live: LiveCache) -> None:
    eventually(lambda: NODE in live.cache.snapshot().nodes)
    offer = LiveOffer(live.cache, PriceTable(), builtin_catalogue(), refresh_s=0)
    assert {r.resource_name for r in offer().resources} == {
        "nvidia.com/gpu",
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-2g.20gb",
        "nvidia.com/mig-3g.40gb",
    }
    registry = CollectorRegistry()
    registry.register(InventoryCollector(live.cache))
    labels = {"Hostname": NODE, "GPU_I_PROFILE": "3g.40gb"}
    assert registry.get_sample_value("gpu_mig_instances_total", labels) == 4
    assert registry.get_sample_value("gpu_mig_instances_available", labels) == 4
    assert registry.get_sample_value("gpu_node_inventory_age_seconds", {"Hostname": NODE}) is not None
    gpu0 = {
        "gpu": "0",
        "UUID": live.cache.snapshot().nodes[NODE].gpunode.inventory.gpus[0].uuid or "",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": NODE,
        "reason": "",
    }
    assert registry.get_sample_value("gpu_device_unhealthy", gpu0) == 0
