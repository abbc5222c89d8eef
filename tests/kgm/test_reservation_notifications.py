"""Reservations made and released through the REST API are announced like binds: ``allocation.created``
and ``allocation.released``, delivered by the assembled app's notifier to a receiver on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from inventory.api.auth import Role
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.inventory.api import TOKENS, write_tokens
from tests.inventory.receivers import Receiver
from tests.kgm.test_lifespan import serving


def call(app: ASGIApp, method: str, path: str, **options: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kgm") as client:
            return await client.request(method, path, **options)

    return asyncio.run(go())


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_reservation_made_and_released_through_the_api_is_announced(
    receiver: Receiver, tmp_path: Path
) -> None:
    endpoints = tmp_path / "notify.json"
    endpoints.write_text(
        json.dumps(
            {"endpoints": [{"name": "ops", "format": "generic", "url": receiver.url, "events": ["*"]}]}
        )
    )
    settings = ServeSettings(
        inventory="demo", notifications=endpoints, api_tokens=write_tokens(tmp_path / "tokens.yaml")
    )
    app, parts = assembled_app(settings, CollectorRegistry())
    headers = {"Authorization": f"Bearer {TOKENS[Role.USER]}"}
    try:
        with serving(app):
            made = call(
                app,
                "POST",
                "/api/v1/gpu/allocations",
                json={"namespace": "ml", "podName": "train"},
                headers=headers,
            )
            assert made.status_code == 201, made.text
            allocation_id = made.json()["data"]["allocationId"]
            released = call(app, "DELETE", f"/api/v1/gpu/allocations/{allocation_id}", headers=headers)
            assert released.status_code == 200, released.text
            bodies = [r.json() for r in receiver.wait_for(2)]
    finally:
        parts.close()
    assert [(b["event"], b["details"]["allocation"]) for b in bodies] == [
        ("allocation.created", allocation_id),
        ("allocation.released", allocation_id),
    ]
    assert all(b["details"]["pod"] == "train" and b["details"]["namespace"] == "ml" for b in bodies)
