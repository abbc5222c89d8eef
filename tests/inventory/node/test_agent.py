"""The node agent with fake GPUs and an in-memory store: what it writes, and when."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.health import HealthSettings
from inventory.domain.readings import DeviceAssignment
from inventory.node.agent import Agent, AgentSettings, InMemoryGpuNodeStore
from inventory.node.fake_gpu import FakeGpuSource
from inventory.node.health import HealthTracker
from inventory.node.podresources import StaticAssignments

NODE = "gpu-h100-01"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 11, 27, tzinfo=UTC) + timedelta(seconds=self.now)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> FakeGpuSource:
    return FakeGpuSource.from_cluster_file("demo", NODE, clock=clock)


def make_agent(
    source: FakeGpuSource, store: Any, clock: Clock, assignments: StaticAssignments | None = None
) -> Agent:
    return Agent(
        node_name=NODE,
        source=source,
        store=store,
        assignments=assignments,
        health=HealthTracker(HealthSettings(recovery_seconds=600), clock=clock),
        catalogue=builtin_catalogue(),
        settings=AgentSettings(interval_s=10, heartbeat_s=30),
        clock=clock,
        wall_clock=clock.wall,
    )


def test_the_first_tick_creates_the_gpunode_and_writes_its_status(
    source: FakeGpuSource, clock: Clock
) -> None:
    store = InMemoryGpuNodeStore()
    assert make_agent(source, store, clock).tick()
    obj = store.objects[NODE]
    assert obj["apiVersion"] == "gpu.kgm.io/v1alpha1"
    assert obj["kind"] == "GpuNode"
    status = obj["status"]
    assert status["heartbeatGeneration"] == 1
    assert len(status["gpus"]) == 8
    assert [len(g.get("migDevices", [])) for g in status["gpus"]] == [0, 0, 0, 0, 4, 4, 4, 4]
    assert status["gpus"][4]["model"] == "H100-80GB"
    assert status["podResourcesAvailable"] is False


def test_nothing_new_writes_nothing_until_the_heartbeat_is_due(source: FakeGpuSource, clock: Clock) -> None:
    store = InMemoryGpuNodeStore()
    agent = make_agent(source, store, clock)
    agent.tick()
    clock.now = 10
    source.set_temperature(0, 71)  # volatile: rides with the next heartbeat
    assert not agent.tick()
    clock.now = 31
    assert agent.tick()
    assert store.writes == 2
    assert store.objects[NODE]["status"]["heartbeatGeneration"] == 2
    assert store.objects[NODE]["status"]["gpus"][0]["temperatureC"] == 71


def test_a_critical_xid_is_published_at_once_and_an_application_xid_is_not(
    source: FakeGpuSource, clock: Clock
) -> None:
    store = InMemoryGpuNodeStore()
    health = HealthTracker(HealthSettings(), clock=clock)
    agent = Agent(
        node_name=NODE,
        source=source,
        store=store,
        assignments=None,
        health=health,
        catalogue=builtin_catalogue(),
        clock=clock,
        wall_clock=clock.wall,
    )
    agent.tick()
    source.inject_xid(2, 13)  # an application's fault (device plugin semantics)
    for event in source.poll_events(0):
        health.record(event)
    clock.now = 1
    assert not agent.tick()
    source.inject_xid(2, 79)  # fallen off the bus
    for event in source.poll_events(0):
        health.record(event)
    clock.now = 2
    assert agent.tick()
    gpu = store.objects[NODE]["status"]["gpus"][2]
    assert gpu["healthy"] is False
    assert "XID 79" in gpu["unhealthyReason"]


def test_a_restarted_agent_continues_the_generation(source: FakeGpuSource, clock: Clock) -> None:
    store = InMemoryGpuNodeStore()
    first = make_agent(source, store, clock)
    first.tick()
    clock.now = 40
    first.tick()
    make_agent(source, store, clock).tick()
    assert store.objects[NODE]["status"]["heartbeatGeneration"] == 3


def test_the_kubelet_says_which_pod_holds_which_device(source: FakeGpuSource, clock: Clock) -> None:
    store = InMemoryGpuNodeStore()
    uuid = source.read().gpus[4].mig_devices[0].uuid
    held = StaticAssignments([DeviceAssignment("ml", "serve-1", "server", "nvidia.com/mig-1g.10gb", (uuid,))])
    make_agent(source, store, clock, held).tick()
    status = store.objects[NODE]["status"]
    assert status["podResourcesAvailable"] is True
    assert status["allocations"] == [
        {
            "namespace": "ml",
            "pod": "serve-1",
            "container": "server",
            "resource": "nvidia.com/mig-1g.10gb",
            "deviceIds": [uuid],
        }
    ]


def test_one_failing_gpu_is_reported_and_the_others_are_still_read(
    source: FakeGpuSource, clock: Clock
) -> None:
    store = InMemoryGpuNodeStore()
    source.fail_device(3)
    make_agent(source, store, clock).tick()
    gpus = store.objects[NODE]["status"]["gpus"]
    assert gpus[3]["healthy"] is False
    assert gpus[3]["error"] == "GPU is lost"
    assert all(g["healthy"] for i, g in enumerate(gpus) if i != 3)


class FlakyStore(InMemoryGpuNodeStore):
    """The API server away for the first few calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def update_gpunode_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("API server unavailable")
        return super().update_gpunode_status(name, status)


def test_the_agent_rides_out_an_unavailable_api_server() -> None:
    source = FakeGpuSource.from_cluster_file("demo", NODE)
    store = FlakyStore(failures=2)
    agent = Agent(
        node_name=NODE,
        source=source,
        store=store,
        assignments=None,
        health=HealthTracker(),
        catalogue=builtin_catalogue(),
        settings=AgentSettings(interval_s=0.05, heartbeat_s=0.05, max_backoff_s=0.1),
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        for _ in range(200):
            if store.writes >= 2:
                break
            stop.wait(0.02)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert store.failures == 0
    assert store.writes >= 2


def run_kgm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kgm.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_agent_once_prints_the_inventory_as_json() -> None:
    run = run_kgm("agent", "--once", "--fake-cluster", "demo", "--node-name", "gpu-h100nvl-01")
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    assert status["nodeName"] == "gpu-h100nvl-01"
    assert [g["model"] for g in status["gpus"]] == ["H100-94GB"] * 4


def test_agent_without_nvml_says_so_and_exits_non_zero() -> None:
    run = run_kgm("agent", "--once", "--node-name", "n1")
    assert run.returncode == 1
    assert "NVML" in run.stderr
    assert "Traceback" not in run.stderr
