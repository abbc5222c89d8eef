"""The reconciler end to end through the official client against the Kubernetes emulator: pods come
and go, the reconciler is killed in the middle and restarted, and the ledger ends equal to the truth."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inventory.domain.allocation import AllocationFilter, Status, allocation_id
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.kube import WatchEvent
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger
from inventory.live.reflector import Reflector
from inventory.live.static import cache_of
from tests.support.kube_emulator import PODS, KubeEmulator, eventually

CACHE = cache_of(parse_cluster({"nodes": [{"name": "gpu-1", "gpus": [{"model": "H100-80GB", "count": 8}]}]}))
GPU = "nvidia.com/gpu"


def shape_of(node: str) -> NodeShape | None:
    state = CACHE.snapshot().states.get(node)  # type: ignore[call-overload]
    return state.shape if state else None


def gpu_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {GPU: "1"}}}],
        },
        "status": {"phase": "Running"},
    }


@dataclass
class Controller:
    """A reconciler fed by a pod reflector, as `kgm serve` runs it; killed by `stop`."""

    ledger: SqlLedger
    reconciler: Reconciler
    reflector: Reflector
    stop: threading.Event
    thread: threading.Thread

    def kill(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        self.ledger.close()


def start(kube: KubeEmulator, path: Path) -> Controller:
    ledger = SqlLedger.open(f"sqlite:///{path}")
    reconciler = Reconciler(ledger=ledger, shape_of=shape_of, prices=PriceTable())
    client = kube.new_client()

    def on_event(event: WatchEvent) -> None:
        reconciler.on_pod(event.type, event.object)

    reflector = Reflector(
        name="pods",
        list_fn=client.list_pods,
        watch_fn=client.watch_pods,
        on_replace=reconciler.resync,
        on_event=on_event,
        watch_timeout_seconds=1,
    )
    stop = threading.Event()
    thread = threading.Thread(target=reflector.run, args=(stop,), daemon=True)
    thread.start()
    assert reflector.has_synced.wait(5)
    return Controller(ledger, reconciler, reflector, stop, thread)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def controller(kube_emulator: KubeEmulator, ledger_path: Path) -> Iterator[Controller]:
    running = start(kube_emulator, ledger_path)
    yield running
    if not running.stop.is_set():
        running.kill()


def uid_of(kube: KubeEmulator, name: str) -> str:
    stored = kube.stored(PODS, name, namespace="ml")
    assert stored is not None
    return str(stored["metadata"]["uid"])


def test_a_restart_in_the_middle_of_a_stream_loses_nothing_and_counts_nothing_twice(
    kube_emulator: KubeEmulator, controller: Controller, ledger_path: Path
) -> None:
    for i in range(5):
        kube_emulator.create(PODS, gpu_pod(f"p{i}"))
    uids = {f"p{i}": uid_of(kube_emulator, f"p{i}") for i in range(5)}
    eventually(lambda: len(controller.ledger.open_allocations()) == 5)

    controller.kill()  # the reconciler goes away; the cluster goes on
    kube_emulator.delete(PODS, "p0", namespace="ml")
    kube_emulator.patch(
        PODS,
        "p1",
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {"name": "c", "state": {"terminated": {"finishedAt": "2026-11-27T08:30:00Z"}}}
                ],
            }
        },
        namespace="ml",
        subresource="status",
    )
    kube_emulator.create(PODS, gpu_pod("p5"))
    uids["p5"] = uid_of(kube_emulator, "p5")
    before_restart = datetime.now(UTC)

    restarted = start(kube_emulator, ledger_path)
    try:
        ledger = restarted.ledger
        gone = ledger.get(allocation_id(uids["p0"], GPU))
        finished = ledger.get(allocation_id(uids["p1"], GPU))
        assert gone is not None and gone.status is Status.RELEASED and gone.end_inferred
        assert gone.end is not None and gone.end >= before_restart  # closed at discovery, flagged so
        assert finished is not None and (finished.end, finished.end_inferred) == (
            datetime(2026, 11, 27, 8, 30, tzinfo=UTC),
            False,
        )
        assert {a.pod_uid for a in ledger.open_allocations()} == {uids[f"p{i}"] for i in (2, 3, 4, 5)}
        assert ledger.find(AllocationFilter(), limit=100).total == 6  # one row per pod, none twice

        kube_emulator.delete(PODS, "p2", namespace="ml")  # and events flow again after the restart
        eventually(lambda: len(ledger.open_allocations()) == 3)
    finally:
        restarted.kill()
