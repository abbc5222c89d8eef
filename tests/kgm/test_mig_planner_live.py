"""`kgm serve --mig-planner` against the Kubernetes emulator, through the official client.

apply: a pod waits for a 3g.40gb nobody has; the leader writes a mig-parted config into the MIG
manager's ConfigMap and labels the node; the capacity counts only once the MIG manager says
``success`` *and* the agent reports the layout; then the pod passes the extender's filter there.
A node whose GPU holds an instance is never touched. recommend: the same plan is served on
``GET /api/v1/gpu/mig/plan`` and nothing in the cluster changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from extender.service import ExtenderService
from inventory.domain.labels import MIG_CONFIG_LABEL, MIG_CONFIG_STATE_LABEL
from inventory.domain.mig_plan import PlanSettings
from inventory.domain.readings import DeviceAssignment
from inventory.layouts.settings import LayoutSettings, PlannerMode
from kgm.assembly import Parts
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.inventory.api import TOKENS, write_tokens
from tests.inventory.layouts.support import ONE_G, THREE_G, gpu_pod, gpunode, h100_node, mig_uuid
from tests.kgm.test_events_live import events_in
from tests.kgm.test_live_serve import kubeconfig
from tests.support.kube_emulator import GPUNODES, NODES, PODS, KubeEmulator, eventually

NS, CM = "gpu-operator", "kgm-mig-parted-config"
WAITING = gpu_pod("wants-3g", {THREE_G: 1}, unschedulable=True)
#: Whole-GPU pods that came and went: the recent mix wants whole GPUs too, so one GPU is carved.
FINISHED = gpu_pod("done", {"nvidia.com/gpu": 1}, node="gpu-busy", phase="Succeeded")


def _cluster(kube: KubeEmulator) -> None:
    """gpu-free: two whole H100s, nothing held. gpu-busy: one H100 in 7 x 1g.10gb, one of them held by
    a running pod (the kubelet says which)."""
    busy = h100_node("gpu-busy", ["1g.10gb"] * 7)
    held = DeviceAssignment("ml", "running", "c", ONE_G, (mig_uuid("gpu-busy", 0, 2),))
    for name in ("gpu-free", "gpu-busy"):
        kube.create(NODES, {"metadata": {"name": name, "labels": {MIG_CONFIG_STATE_LABEL: "success"}}})
    kube.create(GPUNODES, gpunode(h100_node("gpu-free", None, None)))
    kube.create(GPUNODES, gpunode(busy, assignments=[held]))
    for pod in (gpu_pod("running", {ONE_G: 1}, node="gpu-busy"), WAITING, FINISHED):
        kube.create(PODS, pod)


def _settings(kube: KubeEmulator, tmp_path: Path, mode: PlannerMode) -> ServeSettings:
    return ServeSettings(
        inventory=None,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        environ={"KUBECONFIG": str(kubeconfig(kube.url, tmp_path / "config"))},
        watch_timeout_s=1,
        api_tokens=write_tokens(tmp_path / "tokens.yaml"),
        layouts=LayoutSettings(
            mode=mode,
            interval_s=0.1,
            plan=PlanSettings(change_gpus_in_use=False, min_seconds_between_changes=3600),
        ),
    )


@dataclass
class Served:
    parts: Parts
    registry: CollectorRegistry
    app: Starlette

    @property
    def extender(self) -> ExtenderService:
        return self.parts.extender

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture()
def serving(kube_emulator: KubeEmulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """`kgm serve`'s whole app and background work in the mode the test names (indirect parameter)."""
    _cluster(kube_emulator)
    registry = CollectorRegistry()
    app, parts = assembled_app(_settings(kube_emulator, tmp_path, request.param), registry)
    try:
        with parts.background.running():
            eventually(parts.ready, timeout=20)
            yield Served(parts, registry, app)
    finally:
        parts.close()


def _labels(kube: KubeEmulator, node: str) -> dict[str, str]:
    stored = kube.stored(NODES, node)
    assert stored is not None
    return dict(stored["metadata"].get("labels") or {})


def _mig_manager_applies(kube: KubeEmulator, node: str, config: str) -> None:
    """What NVIDIA's MIG manager and the node agent do: lay the GPUs out as the named config says,
    report them in the GpuNode."""
    configmap = kube.stored("v1/configmaps", CM, namespace=NS)
    assert configmap is not None
    entries = yaml.safe_load(configmap["data"]["config.yaml"])["mig-configs"][config]
    layouts: dict[int, list[str] | None] = {}
    for entry in entries:
        for device in entry["devices"]:
            profiles = [p for p, n in (entry.get("mig-devices") or {}).items() for _ in range(n)]
            layouts[device] = profiles if entry["mig-enabled"] else None
    laid_out = h100_node(node, *(layouts[i] for i in sorted(layouts)))
    kube.patch(GPUNODES, node, {"status": gpunode(laid_out, generation=2)["status"]}, subresource="status")


def _offered(served: Served) -> set[str]:
    return {r.profile.name for r in served.parts.offer().resources if r.profile is not None}


@pytest.mark.parametrize("serving", [PlannerMode.APPLY], indirect=True)
def test_apply_lays_a_node_out_through_the_mig_manager_and_then_the_waiting_pod_fits(
    kube_emulator: KubeEmulator, serving: Served
) -> None:
    before = serving.extender.filter(WAITING, ["gpu-free", "gpu-busy"])
    assert before.passed == []
    # Admission offers what the planner may carve, not only what exists (here only 1g.10gb).
    assert "3g.40gb" in _offered(serving)

    labels = eventually(
        lambda: (
            _labels(kube_emulator, "gpu-free").get(MIG_CONFIG_LABEL) and _labels(kube_emulator, "gpu-free")
        ),
        timeout=20,
    )
    config = labels[MIG_CONFIG_LABEL]
    assert config.startswith("kgm-") and labels[MIG_CONFIG_STATE_LABEL] == "pending"
    configmap = kube_emulator.stored("v1/configmaps", CM, namespace=NS)
    assert configmap is not None and config in yaml.safe_load(configmap["data"]["config.yaml"])["mig-configs"]

    # The MIG manager reports success, but the agent has not shown the layout: nothing counts yet.
    kube_emulator.patch(NODES, "gpu-free", {"metadata": {"labels": {MIG_CONFIG_STATE_LABEL: "success"}}})
    time.sleep(0.5)
    assert serving.sample("kgm_mig_plan_applications_total", result="applied") is None
    assert serving.sample("kgm_mig_nodes_reconfiguring") == 1
    assert serving.extender.filter(WAITING, ["gpu-free"]).passed == []

    _mig_manager_applies(kube_emulator, "gpu-free", config)
    eventually(lambda: serving.sample("kgm_mig_plan_applications_total", result="applied") == 1, timeout=20)
    assert serving.sample("kgm_mig_nodes_reconfiguring") == 0
    assert eventually(
        lambda: serving.extender.filter(WAITING, ["gpu-free", "gpu-busy"]).passed, timeout=20
    ) == ["gpu-free"]

    # While it waited, the pod was told why it could not be placed (the filters above found no room).
    told = eventually(lambda: events_in(kube_emulator, "ml"), timeout=10)
    assert {(e["involvedObject"]["name"], e["reason"]) for e in told} == {("wants-3g", "NoGpuRoom")}

    # The node whose GPU holds an instance was never labelled, nor any pod or GpuNode changed by kgm:
    # its writes are the layout's, the Lease, and the waiting pod's Events.
    assert MIG_CONFIG_LABEL not in _labels(kube_emulator, "gpu-busy")
    writes = [
        r for r in kube_emulator.requests() if not r.from_harness and r.method in ("POST", "PUT", "PATCH")
    ]
    assert {r.path for r in writes if not r.path.startswith("/api/v1/namespaces/ml/events")} <= {
        "/api/v1/nodes/gpu-free",
        f"/api/v1/namespaces/{NS}/configmaps",
        f"/api/v1/namespaces/{NS}/configmaps/{CM}",
        "/apis/coordination.k8s.io/v1/namespaces/kgm-system/leases",
        "/apis/coordination.k8s.io/v1/namespaces/kgm-system/leases/kgm-reconciler",
    }


@pytest.mark.parametrize("serving", [PlannerMode.RECOMMEND], indirect=True)
def test_recommend_serves_the_plan_and_changes_nothing_in_the_cluster(
    kube_emulator: KubeEmulator, serving: Served
) -> None:
    app = serving.app

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://kgm"
        ) as client:
            headers = {"authorization": f"Bearer {TOKENS[next(iter(TOKENS))]}"}
            return await client.get("/api/v1/gpu/mig/plan", headers=headers)

    def planned() -> dict[str, Any] | None:
        data: dict[str, Any] = asyncio.run(get()).json()["data"]
        return data if data["changes"] else None

    assert _offered(serving) == {"1g.10gb"}  # recommend changes nothing: admission offers what exists
    data = eventually(planned, timeout=20)
    assert data["mode"] == "recommend" and data["applies"] is False
    assert {c["nodeName"] for c in data["changes"]} == {"gpu-free"}
    assert all("3g.40gb" in (c["after"]["profiles"] or {}) for c in data["changes"])
    time.sleep(0.3)  # a few more rounds
    writes = [
        r for r in kube_emulator.requests() if not r.from_harness and r.method in ("POST", "PUT", "PATCH")
    ]
    assert all("/leases" in r.path for r in writes), [r.path for r in writes]
    assert MIG_CONFIG_LABEL not in _labels(kube_emulator, "gpu-free")
    assert kube_emulator.stored("v1/configmaps", CM, namespace=NS) is None
    assert serving.extender.filter(WAITING, ["gpu-free"]).passed == []
