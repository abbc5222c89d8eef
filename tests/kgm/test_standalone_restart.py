"""Standalone (`kgm serve --inventory FILE --ledger FILE`) restarted: what bound pods hold, by the
ledger's active allocations, is held again (no watch will show those pods), with the open reservations;
what has ended holds nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from inventory.domain.allocation import Allocation, Status, allocation_id
from inventory.ledger.sql import SqlLedger
from kgm.server import assembled_app
from kgm.settings import ServeSettings

TOKEN = "s3cret-user-token"
WHOLE, SLICED = {"model": "H100-80GB"}, {"model": "H100-80GB", "mig": ["3g.40gb", "3g.40gb"]}
CLUSTER = {"nodes": [{"name": "solo", "gpus": [WHOLE, SLICED]}]}
NOW = datetime.now(UTC)


def row(key: str, resource: str, **fields: Any) -> Allocation:
    values: dict[str, Any] = {
        "id": allocation_id(f"uid-{key}", resource), "namespace": "ml", "pod": key, "pod_uid": f"uid-{key}",
        "node": "solo", "resource": resource, "count": 1, "gpu_model": "H100-80GB",
        "hourly_price": Decimal("3.90"), "status": Status.ACTIVE, "start": NOW - timedelta(hours=1), **fields,
    }  # fmt: skip
    return Allocation(**values)


def serve(tmp_path: Path, ledger: str) -> Any:
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump([{"token": TOKEN, "name": "alice", "role": "USER"}]))
    settings = ServeSettings(
        inventory=str(tmp_path / "cluster.yaml"), ledger=ledger, api_tokens=tmp_path / "tokens.yaml"
    )
    app, parts = assembled_app(settings, CollectorRegistry())

    def call(method: str, path: str, body: Any = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                return await client.request(method, path, json=body, headers=headers)

        return asyncio.run(go())

    return call, parts


def test_a_restart_holds_again_what_bound_pods_hold(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with SqlLedger.open(ledger) as before:
        before.record_start(row("train", "nvidia.com/gpu"))  # a bound pod's whole GPU
        # A pod that claimed a reservation: the row's id is the reservation's.
        before.record_start(row("serve", "nvidia.com/mig-3g.40gb", id="reservation-1"))
        before.record_start(row("done", "nvidia.com/mig-3g.40gb", status=Status.RELEASED, end=NOW))
    call, parts = serve(tmp_path, ledger)
    try:
        data = call("GET", "/api/v1/gpu/overview").json()["data"]
        assert data["fullGpus"] == {"total": 1, "allocated": 1, "available": 0}
        assert data["migInstances"]["byProfile"]["mig-3g.40gb"] == {
            "total": 2,
            "allocated": 1,
            "available": 1,
        }
        whole = call("POST", "/api/v1/gpu/allocations", {"namespace": "ml", "podName": "p", "useMig": False})
        assert whole.status_code == 409, whole.text
    finally:
        parts.close()
