"""A real HTTPS server (uvicorn, TLS, the production app) on loopback for the webhook's tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import Offer, offer_of
from kgm.certs import make_self_signed_files
from kgm.server import build_app
from kgm.tls import ReloadingTLS
from webhook.settings import WebhookSettings


@pytest.fixture(scope="session")
def demo_offer() -> Offer:
    return offer_of(load_cluster("demo"))


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    ca_file: Path
    registry: CollectorRegistry

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, verify=ssl.create_default_context(cafile=self.ca_file), timeout=10
        )


@contextlib.contextmanager
def serve_https(app: ASGIApp, scratch: Path, registry: CollectorRegistry) -> Iterator[RunningServer]:
    """``app`` under uvicorn with TLS on a loopback port, until the block ends."""
    cert, key = make_self_signed_files(scratch)
    tls = ReloadingTLS(cert_file=cert, key_file=key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, ssl_context_factory=lambda config, default: tls.context, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield RunningServer(
            base_url=f"https://localhost:{port}", ca_file=scratch / "ca.crt", registry=registry
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory, demo_offer: Offer) -> Iterator[RunningServer]:
    registry = CollectorRegistry()
    app = build_app(offer=lambda: demo_offer, webhook=WebhookSettings(), registry=registry)
    with serve_https(app, tmp_path_factory.mktemp("tls"), registry) as server:
        yield server


@pytest.fixture
def client(https_server: RunningServer) -> Iterator[httpx.Client]:
    with https_server.client() as client:
        yield client
