"""`kgm serve` in a cluster with GPU quotas: the watches feed the quota book, admission refuses past a
GpuQuota, and the leader writes what the GpuQuota uses into its status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from inventory.domain.catalogue import builtin_catalogue
from inventory.node.agent import Agent
from inventory.node.fake_gpu import FakeGpuSource
from inventory.node.health import HealthTracker
from kgm.assembly import live_parts
from kgm.lifespan import lifespan
from kgm.server import build_app
from kgm.settings import ServeSettings
from tests.kgm.test_live_serve import kubeconfig
from tests.support.kube_emulator import GPUQUOTAS, PODS, RESOURCEQUOTAS, KubeEmulator, eventually
from tests.webhook.pods import container, gpus, pod


def review(uid: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "ml",
            "object": obj,
        },
    }


def test_a_live_gpuquota_refuses_past_its_limit_and_shows_its_use(
    kube_emulator: KubeEmulator, tmp_path: Path
) -> None:
    environ = {"KUBECONFIG": str(kubeconfig(kube_emulator.url, tmp_path / "config"))}
    Agent(
        node_name="gpu-h100nvl-01",
        source=FakeGpuSource.from_cluster_file("demo", "gpu-h100nvl-01"),
        store=kube_emulator.client,
        assignments=None,
        health=HealthTracker(),
        catalogue=builtin_catalogue(),
    ).tick()
    kube_emulator.create(
        GPUQUOTAS,
        {
            "apiVersion": "gpu.kgm.io/v1alpha1",
            "kind": "GpuQuota",
            "metadata": {"name": "nlp", "namespace": "ml"},
            "spec": {"team": "nlp", "limits": {"gpuEquivalents": 2}},
        },
    )
    kube_emulator.create(
        RESOURCEQUOTAS,
        {
            "metadata": {"name": "profile", "namespace": "ml"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
        },
    )
    held = pod(container("c", {"nvidia.com/gpu": "1"}), labels={"gpu.kgm.io/team": "nlp"})
    held["metadata"] |= {"name": "held", "uid": "u-held"}
    held["spec"]["nodeName"] = "gpu-h100nvl-01"
    kube_emulator.create(PODS, held)

    registry = CollectorRegistry()
    settings = ServeSettings(
        inventory=None,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        environ=environ,
        watch_timeout_s=1,
        quota_status_interval_s=0.1,
    )
    parts = live_parts(settings, registry)
    app = build_app(
        offer=parts.offer,
        webhook=settings.webhook,
        registry=registry,
        ready=parts.ready,
        quota=parts.quota,
        lifespan=lifespan(parts.background),
    )
    team_pod = pod(gpus(1), annotations={"gpu.kgm.io/team": "nlp"})

    def status() -> dict[str, Any]:
        found = kube_emulator.stored(GPUQUOTAS, "nlp", namespace="ml") or {}
        return dict(found.get("status") or {})

    async def admit() -> list[dict[str, Any]]:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(eventually, lambda: parts.quota is not None and parts.ready())
            await asyncio.to_thread(eventually, lambda: status().get("pods") == 1)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="https://kgm"
            ) as client:
                answers = []
                for uid in ("u-1", "u-2"):
                    reply = await client.post("/mutate", content=json.dumps(review(uid, team_pod)))
                    answers.append(reply.json()["response"])
                return answers

    try:
        first, second = asyncio.run(admit())
        assert first["allowed"] is True
        assert second["allowed"] is False
        assert second["status"]["message"] == (
            "team nlp: 2 of 2 GPU-equivalents used, this pod needs 1 (GpuQuota ml/nlp)"
        )
        assert status()["used"]["gpuEquivalents"] == 1.0
        labels = {
            "kind": "ResourceQuota",
            "quota_namespace": "ml",
            "quota": "profile",
            "team": "",
            "unit": "gpuEquivalents",
        }
        assert registry.get_sample_value("gpu_quota_limit", labels) == 8
    finally:
        parts.stop.set()
        parts.close()
