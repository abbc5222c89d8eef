"""`kgm serve` against the Kubernetes emulator: a pod no node can take gets a NoGpuRoom Event, written
by the recorder assembly wires into the extender, through the official client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.inventory.layouts.support import ONE_G, THREE_G, gpu_pod, gpunode, h100_node
from tests.kgm.test_live_serve import kubeconfig
from tests.support.kube_emulator import GPUNODES, NODES, PODS, KubeEmulator, eventually


def events_in(kube: KubeEmulator, namespace: str) -> list[dict[str, Any]]:
    """The Events stored in ``namespace``, read back over the emulator's HTTP API."""
    listed = httpx.get(f"{kube.url}/api/v1/namespaces/{namespace}/events", timeout=5)
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


def test_a_pod_no_node_can_take_gets_a_no_gpu_room_event(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    for name, layout in (("gpu-whole", None), ("gpu-small", ["1g.10gb"] * 7)):
        kube_emulator.create(NODES, {"metadata": {"name": name}})
        kube_emulator.create(GPUNODES, gpunode(h100_node(name, layout, None)))
    waiting = kube_emulator.create(PODS, gpu_pod("wants-3g", {THREE_G: 1}, unschedulable=True))
    settings = ServeSettings(
        inventory=None,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        environ={"KUBECONFIG": str(kubeconfig(kube_emulator.url, tmp_path / "config"))},
        watch_timeout_s=1,
        pod_name="kgm-5c7d9-x2x4q",
    )
    _, parts = assembled_app(settings, CollectorRegistry())
    try:
        with parts.background.running():
            eventually(parts.ready, timeout=20)
            outcome = parts.extender.filter(waiting, ["gpu-whole", "gpu-small"])
            assert outcome.passed == []
            [event] = eventually(lambda: events_in(kube_emulator, "ml"), timeout=10)
            assert parts.extender.filter(gpu_pod("fits", {ONE_G: 1}), ["gpu-small"]).passed == ["gpu-small"]
    finally:
        parts.close()
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ml",
        "name": "wants-3g",
        "uid": waiting["metadata"]["uid"],
    }
    assert (event["reason"], event["type"], event["action"], event["count"]) == (
        "NoGpuRoom",
        "Warning",
        "Filter",
        1,
    )
    assert event["reportingComponent"] == "gpu.kgm.io/kgm"
    assert event["reportingInstance"] == "kgm-5c7d9-x2x4q"
    assert event["message"] == "0/2 nodes can take the pod: 2 no mig-3g.40gb here"
    assert len(events_in(kube_emulator, "ml")) == 1  # the pod that fits is told nothing
