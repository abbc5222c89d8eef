"""End to end: a GpuAllocation allocated and released through the Kubernetes emulator, the official
client and the reflector."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from inventory.domain.allocation import Status
from inventory.reservations.controller import GpuAllocationController, gpuallocation_watch
from tests.inventory.reservations.controller_support import NOW, Rig, ga
from tests.support.kube_emulator import GPUALLOCATIONS as GPUALLOCATIONS_PATH
from tests.support.kube_emulator import KubeEmulator, eventually


@pytest.fixture
def live(kube_emulator: KubeEmulator, rig: Rig) -> Iterator[Rig]:
    stop = threading.Event()
    client = kube_emulator.new_client()
    controller = GpuAllocationController(reservations=rig.reserver, store=client, clock=lambda: NOW)
    watch = gpuallocation_watch(client, controller, watch_timeout_seconds=1, resync_interval_s=0.2)
    loops = {"reflector-gpuallocations": watch.reflector.run, "gpuallocation-resync": watch.resync}
    for name, loop in loops.items():
        threading.Thread(target=loop, args=(stop,), name=name, daemon=True).start()
    assert watch.reflector.has_synced.wait(5)
    yield rig
    stop.set()
    for thread in threading.enumerate():
        if thread.name in ("reflector-gpuallocations", "gpuallocation-resync"):
            thread.join(timeout=5)
            assert not thread.is_alive()


def test_a_gpuallocation_is_allocated_and_released_through_the_api_server(
    kube_emulator: KubeEmulator, live: Rig
) -> None:
    body = ga("infer-1", workloadType="Inference", requiredMemoryGb=10)
    del body["metadata"]["uid"]  # the API server gives one
    kube_emulator.create(GPUALLOCATIONS_PATH, body)

    def allocated() -> dict[str, Any]:
        stored = kube_emulator.stored(GPUALLOCATIONS_PATH, "infer-1", namespace="ml")
        status: dict[str, Any] = dict((stored or {}).get("status") or {})
        return status if status.get("phase") == "Allocated" else {}

    status = eventually(allocated)
    assert status["allocatedResource"] == "nvidia.com/mig-1g.10gb"
    assert status["nodeName"] == "small"
    assert status["allocationTime"] == "2026-11-27T08:00:00Z"
    held = live.ledger.get(status["allocationId"])
    assert held is not None and held.status is Status.RESERVED and held.pod == "infer-1"
    assert live.mig_free("small", "1g.10gb") == 1

    def released() -> bool:
        row = live.ledger.get(status["allocationId"])
        return row is not None and row.status is Status.RELEASED

    kube_emulator.delete(GPUALLOCATIONS_PATH, "infer-1", namespace="ml")
    eventually(released)
    assert live.mig_free("small", "1g.10gb") == 2
    assert len(live.ledger.open_allocations()) == 0
