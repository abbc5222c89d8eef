"""Two replicas of `kgm serve` against one API server (the emulator) and one ledger: only the replica that
holds the Lease decides placement and reservations, so binds and reservations sprayed across both never
book a slice twice; when it stops, the other takes over, holds again what the reservations hold, and
serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from inventory.api.auth import Role
from inventory.domain.labels import MIG_CONFIG_STATE_LABEL, ROLE
from inventory.leader import ROLE_LEADER
from kgm.assembly import Parts
from kgm.leadership import NOT_LEADER
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.inventory.api import TOKENS, write_tokens
from tests.inventory.layouts.support import THREE_G, gpu_pod, gpunode, h100_node
from tests.kgm.test_live_serve import kubeconfig
from tests.support.kube_emulator import GPUNODES, NODES, PODS, KubeEmulator, eventually

NODE = "gpu-a"
CAPACITY = 2  # one H100 as 2 x 3g.40gb: the only slices in the cluster
HEADERS = {"authorization": f"Bearer {TOKENS[Role.USER]}"}


@dataclass
class Replica:
    name: str
    app: Starlette
    parts: Parts

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
                content = json.dumps(body) if body is not None else None
                return await client.request(method, path, content=content, headers=HEADERS)

        return asyncio.run(go())

    def bind(self, pod: str) -> str:
        """The reply's Error ("" when bound)."""
        args = {"PodName": pod, "PodNamespace": "ml", "PodUID": f"uid-{pod}", "Node": NODE}
        response = self.call("POST", "/extender/bind", args)
        assert response.status_code == 200
        return str(response.json()["Error"])

    def reserve(self, pod: str) -> httpx.Response:
        body = {"namespace": "ml", "podName": pod, "requiredMemoryGb": 40, "useMig": True}
        return self.call("POST", "/api/v1/gpu/allocations", body)

    def serving(self) -> bool:
        assert self.parts.serving is not None
        return self.parts.serving()


def _cluster(kube: KubeEmulator, pods: int) -> None:
    kube.create(NODES, {"metadata": {"name": NODE, "labels": {MIG_CONFIG_STATE_LABEL: "success"}}})
    kube.create(GPUNODES, gpunode(h100_node(NODE, ["3g.40gb"] * CAPACITY)))
    for i in range(pods):
        kube.create(PODS, gpu_pod(f"p{i}", {THREE_G: 1}))
    for replica in ("kgm-a", "kgm-b"):  # the replicas' own pods, which the leader labels
        kube.create(
            PODS, {"metadata": {"name": replica, "namespace": "kgm-system"}, "spec": {"containers": []}}
        )


@contextlib.contextmanager
def _replica(kube: KubeEmulator, tmp_path: Path, name: str) -> Iterator[Replica]:
    settings = ServeSettings(
        inventory=None,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",  # one ledger for both, as PostgreSQL in a cluster
        environ={"KUBECONFIG": str(kubeconfig(kube.url, tmp_path / "config"))},
        watch_timeout_s=1,
        api_tokens=write_tokens(tmp_path / "tokens.yaml"),
        pod_name=name,
        lease_duration_s=3,
        lease_renew_s=0.2,
    )
    app, parts = assembled_app(settings, CollectorRegistry())
    try:
        with parts.background.running():
            eventually(parts.ready, timeout=20)
            yield Replica(name, app, parts)
    finally:
        parts.close()


def _role(kube: KubeEmulator, pod: str) -> str | None:
    stored = kube.stored(PODS, pod, namespace="kgm-system")
    assert stored is not None
    return (stored["metadata"].get("labels") or {}).get(ROLE)


def _bound_by_api_server(kube: KubeEmulator, pod: str) -> None:
    """What the API server does with the Binding the extender created (the emulator stores it only)."""
    kube.patch(PODS, pod, {"spec": {"nodeName": NODE}, "status": {"phase": "Running"}}, namespace="ml")


@pytest.mark.timeout(60)
def test_binds_and_reservations_sprayed_across_two_replicas_never_book_a_slice_twice(
    kube_emulator: KubeEmulator, tmp_path: Path
) -> None:
    calls = 12
    _cluster(kube_emulator, calls)
    with _replica(kube_emulator, tmp_path, "kgm-a") as a, _replica(kube_emulator, tmp_path, "kgm-b") as b:
        leader = eventually(lambda: next((r for r in (a, b) if r.serving()), None), timeout=10)
        follower = b if leader is a else a
        eventually(lambda: _role(kube_emulator, leader.name) == ROLE_LEADER)
        assert _role(kube_emulator, follower.name) is None

        def spray(i: int) -> tuple[str, str, bool, str]:
            """(replica, what, granted, answer) of call ``i``: binds and reservations, each to both."""
            replica = (a, b)[i % 2]
            if i % 4 < 2:
                error = replica.bind(f"p{i}")
                return replica.name, "bind", error == "", error
            response = replica.reserve(f"r{i}")
            return replica.name, "reserve", response.status_code == 201, response.text

        with ThreadPoolExecutor(max_workers=calls) as pool:
            answers = list(pool.map(spray, range(calls)))

    granted = [answer for answer in answers if answer[2]]
    # Exactly the slices there are: the leader gave each once, the other replica decided nothing.
    assert len(granted) == CAPACITY, answers
    assert {name for name, *_ in granted} == {leader.name}
    from_follower = [answer for answer in answers if answer[0] == follower.name]
    assert from_follower and all(NOT_LEADER in text for *_, text in from_follower), from_follower
    reservations = [json.loads(text) for name, what, ok, text in from_follower if what == "reserve"]
    assert all(r["error"]["code"] == 503 for r in reservations)
    assert all(NOT_LEADER not in text for name, _, ok, text in answers if name == leader.name and not ok)


@pytest.mark.timeout(60)
def test_when_the_leader_stops_the_other_replica_restores_the_reservations_and_serves(
    kube_emulator: KubeEmulator, tmp_path: Path
) -> None:
    _cluster(kube_emulator, 2)
    with contextlib.ExitStack() as second, contextlib.ExitStack() as first:
        b = first.enter_context(_replica(kube_emulator, tmp_path, "kgm-b"))
        eventually(b.serving, timeout=10)
        a = second.enter_context(_replica(kube_emulator, tmp_path, "kgm-a"))
        # kgm-b started first and leads; kgm-a refuses to decide, and reads.
        assert b.serving() and not a.serving()
        held = [b.reserve(f"r{i}") for i in range(CAPACITY)]
        assert [r.status_code for r in held] == [201] * CAPACITY
        assert a.reserve("r-late").status_code == 503
        assert NOT_LEADER in a.bind("p0")
        prioritize = a.call("POST", "/extender/prioritize", {"Pod": gpu_pod("p0", {THREE_G: 1})})
        assert prioritize.status_code == 503
        listed = a.call("GET", "/api/v1/gpu/allocations?status=reserved")
        assert listed.status_code == 200 and len(listed.json()["data"]) == CAPACITY

        first.close()  # kgm-b stops: it steps down, hands the lease back and takes its label off
        eventually(a.serving, timeout=10)
        eventually(lambda: _role(kube_emulator, "kgm-a") == ROLE_LEADER)
        assert _role(kube_emulator, "kgm-b") is None
        # kgm-a holds again what the reservations hold: no slice for a third reservation or for a pod.
        assert a.reserve("r-third").status_code == 409
        assert a.bind("p0") not in ("", NOT_LEADER)
        # Released, a reserved slice goes to the next caller, once.
        allocation_id = held[0].json()["data"]["allocationId"]
        assert a.call("DELETE", f"/api/v1/gpu/allocations/{allocation_id}").status_code == 200
        assert a.bind("p0") == ""
        _bound_by_api_server(kube_emulator, "p0")
        assert a.bind("p1") not in ("", NOT_LEADER)
