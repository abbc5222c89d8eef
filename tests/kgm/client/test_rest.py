"""The typed client and the `kgm` subcommands against a real `kgm serve` app over HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from prometheus_client import CollectorRegistry

from kgm.certs import make_self_signed_files
from kgm.cli import main
from kgm.client.commands import BROKEN_PIPE
from kgm.client.rest import AllocationRequest, ApiError, GpuClient
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from kgm.tls import ReloadingTLS
from tests.inventory.api.test_json_style import CAMEL, field_names

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
        assert (reserved.allocated_resource, reserved.status, reserved.status_text) == (
            "nvidia.com/mig-1g.10gb",
            "reserved",
            "Reserved",
        )
        assert client.overview().reserved_allocations == 1
        assert len([d for d in client.devices("gpu-h100-01") if d.mig_enabled]) == 4
        released = client.release(reserved.allocation_id)
        assert (released.allocation_id, released.status, released.status_text) == (
            reserved.allocation_id,
            "released",
            "Released",
        )
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
    assert "gpus            28 (28 healthy)" in capsys.readouterr().out
    assert main(["devices", *common, "--node", "gpu-h100nvl-01", "--json"], {}) == 0
    assert '"model": "H100-94GB"' in capsys.readouterr().out
    assert main(["release", *common, "no-such-id"], {}) == 1
    assert "404" in capsys.readouterr().err
    assert main(["overview", "--server", url, "--ca-file", str(ca)], {}) == 2


# -- What the kgm subcommands print, and how they end -----------------------------------------------

DATA_KEYED = frozenset({"byTeam", "byNamespace", "byModel", "byProfile"})


@pytest.mark.parametrize(
    ("command", "has"),
    [
        (["devices", "--node", "gpu-h100-01"], "memoryTotalMiB"),
        (["overview"], "healthyGpus"),
        (["cost", "--days", "2"], "byProfile"),
        (["allocate", "--namespace", "ml", "--pod", "json-pod"], "allocationId"),
    ],
)
def test_json_output_is_the_apis_camel_case(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str], command: list[str], has: str
) -> None:
    url, ca = server
    assert main([*command, "--server", url, "--ca-file", str(ca), "--token", ADMIN, "--json"], {}) == 0
    printed = json.loads(capsys.readouterr().out)
    names = set(field_names(printed, DATA_KEYED))
    assert has in names
    assert sorted(n for n in names if not CAMEL.match(n)) == []
    if command[0] == "allocate":
        assert (printed["status"], printed["statusText"]) == ("reserved", "Reserved")
        assert main(["release", printed["allocationId"], "--server", url, "--ca-file", str(ca),
                     "--token", ADMIN, "--json"], {}) == 0  # fmt: skip
        released = json.loads(capsys.readouterr().out)
        assert released == {
            "allocationId": printed["allocationId"],
            "status": "released",
            "statusText": "Released",
        }


def test_overview_prints_a_table_not_python_dicts(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca = server
    assert main(["overview", "--server", url, "--ca-file", str(ca), "--token", ADMIN], {}) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "'" not in out
    lines = out.splitlines()
    assert lines[5].split() == ["capacity", "total", "allocated", "available"]
    assert [line.split()[0] for line in lines[6:9]] == ["whole", "MIG", "mig-1g.10gb"]


def test_an_untrusted_server_certificate_gets_a_hint_naming_the_options(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    assert main(["devices", "--server", url, "--token", ADMIN], {}) == 1  # the system CAs: not ours
    err = capsys.readouterr().err
    assert "is not trusted" in err
    assert "--ca-file" in err and "--insecure" in err
    assert "Traceback" not in err


def test_insecure_skips_the_check(server: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    assert main(["overview", "--server", url, "--token", ADMIN, "--insecure"], {}) == 0


@pytest.mark.parametrize("node", ["nope", "gpu-h100-01x"])
def test_a_node_that_is_not_there_is_named_and_exits_1(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str], node: str
) -> None:
    url, ca = server
    assert main(["devices", "--node", node, "--server", url, "--ca-file", str(ca), "--token", ADMIN], {}) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"kgm devices: 404: no such node {node!r}"


def test_a_closed_pipe_ends_quietly(server: tuple[str, Path]) -> None:
    """`kgm devices | head -1`: the reader has gone before kgm writes; no traceback, exit 141."""
    url, ca = server
    command = [sys.executable, "-m", "kgm.cli", "devices", "--server", url, "--ca-file", str(ca)]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "KGM_TOKEN": ADMIN},
    )
    assert child.stdout is not None
    child.stdout.close()  # nobody reads: kgm's first write meets a broken pipe
    _, err = child.communicate(timeout=60)
    assert (child.returncode, err.decode()) == (BROKEN_PIPE, "")
