"""`kgm serve` in a cluster: the webhook offers what the node agents published."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

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
from tests.support.kube_emulator import KubeEmulator, eventually
from tests.webhook.pods import gpus, pod


def kubeconfig(url: str, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}],
                "current-context": "emulator",
            }
        )
    )
    return path


def test_the_webhook_offers_what_the_agents_published(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    environ = {"KUBECONFIG": str(kubeconfig(kube_emulator.url, tmp_path / "config"))}
    agent = Agent(
        node_name="gpu-h100nvl-01",
        source=FakeGpuSource.from_cluster_file("demo", "gpu-h100nvl-01"),
        store=kube_emulator.client,
        assignments=None,
        health=HealthTracker(),
        catalogue=builtin_catalogue(),
    )
    agent.tick()
    registry = CollectorRegistry()
    settings = ServeSettings(
        inventory=None, ledger=f"sqlite:///{tmp_path / 'ledger.db'}", environ=environ, watch_timeout_s=1
    )
    inventory = live_parts(settings, registry)
    app = build_app(
        offer=inventory.offer,
        webhook=ServeSettings().webhook,
        registry=registry,
        ready=inventory.ready,
        lifespan=lifespan(inventory.background),
    )
    try:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-live",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "ml",
                "object": pod(gpus(1), annotations={"gpu.kgm.io/memory-gb": "10"}),
            },
        }

        async def admit() -> httpx.Response:
            async with app.router.lifespan_context(app):  # the watches run from startup to shutdown
                await asyncio.to_thread(eventually, inventory.ready)
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="https://kgm"
                ) as client:
                    return await client.post("/mutate", content=json.dumps(review))

        response = asyncio.run(admit()).json()["response"]
        patch = json.loads(base64.b64decode(response["patch"]))
        # The only MIG instances published are the H100 NVL halves: the live offer, not the demo file.
        assert {
            "op": "add",
            "path": "/spec/containers/0/resources/limits/nvidia.com~1mig-3g.47gb",
            "value": "1",
        } in patch
        assert (
            registry.get_sample_value(
                "gpu_mig_instances_total", {"Hostname": "gpu-h100nvl-01", "GPU_I_PROFILE": "3g.47gb"}
            )
            == 4
        )
    finally:
        inventory.stop.set()
        inventory.close()
