"""The typed client and the `kgm` subcommands against a real `kgm serve` app over HTTPS."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from prometheus_client import CollectorRegistry

from kgm.certs import make_self_signed_files
from kgm.cli import main
from kgm.client.rest import AllocationRequest, ApiError, GpuClient
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from kgm.tls import ReloadingTLS

ADMIN, FINANCE = "admin-token-0123456789", "finance-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    scratch = tmp_path_factory.mktemp("client")
    tokens = scratch / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            [
                {"token": ADMIN, "name": "root", "role": "ADMIN"},
                {"token": FINANCE, "name": "money", "role": "FINANCE"},
            ]
        )
    )
    settings = ServeSettings(inventory="demo", api_tokens=tokens)
    registry = CollectorRegistry()
    app, parts = assembled_app(settings, registry)
    cert, key = make_self_signed_files(scratch)
    tls = ReloadingTLS(cert_file=cert, key_file=key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, ssl_context_factory=lambda c, d: tls.context, log_config=None))
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve(sockets=[sock])), daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        threading.Event().wait(0.02)
    try:
        yield f"https://localhost:{port}", scratch / "ca.crt"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
        parts.close()


def test_allocate_overview_and_release_through_the_typed_client(server: tuple[str, Path]) -> None:
    url, ca = server
    with GpuClient(url, token=ADMIN, verify=str(ca)) as client:
        reserved = client.allocate(
            AllocationRequest(
                namespace="ml",
                pod_name="llm",
                workload_type="Inference",
                required_memory_gb=10,
                team_id="nlp",
            )
        )
        assert (reserved.allocated_resource, reserved.status) == ("nvidia.com/mig-1g.10gb", "Allocated")
        assert client.overview().reserved_allocations == 1
        assert len([d for d in client.devices("gpu-h100-01") if d.mig_enabled]) == 4
        assert client.release(reserved.allocation_id) == "Released"
        assert client.overview().reserved_allocations == 0


def test_errors_come_back_as_api_errors_with_the_servers_words(server: tuple[str, Path]) -> None:
    url, ca = server
    with GpuClient(url, token=FINANCE, verify=str(ca)) as client:
        with pytest.raises(ApiError) as refused:
            client.devices()
        assert refused.value.status == 403
        assert client.cost_analysis(days=3).days == 3
    with GpuClient(url, token="wrong", verify=str(ca)) as client, pytest.raises(ApiError) as unknown:
        client.overview()
    assert unknown.value.status == 401


def test_the_kgm_subcommands_print_tables_and_json(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca = server
    common = ["--server", url, "--ca-file", str(ca), "--token", ADMIN]
    assert main(["overview", *common], {}) == 0
    assert "gpus: 28" in capsys.readouterr().out
    assert main(["devices", *common, "--node", "gpu-h100nvl-01", "--json"], {}) == 0
    assert '"model": "H100-94GB"' in capsys.readouterr().out
    assert main(["release", *common, "no-such-id"], {}) == 1
    assert "404" in capsys.readouterr().err
    assert main(["overview", "--server", url, "--ca-file", str(ca)], {}) == 2
