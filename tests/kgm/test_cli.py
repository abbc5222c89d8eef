from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from kgm.cli import AGENT_EXTRA_MISSING, _parser, choose_inventory, kube_config_found, main
from kgm.logs import JsonFormatter


def serve_demo(*options: str) -> subprocess.CompletedProcess[str]:
    """`kgm serve` on the demo cluster, as a process, with ``options``: for the ways it refuses to start."""
    command = [sys.executable, "-m", "kgm.cli", "serve", "--inventory", "demo", "--port", "0", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_certs_writes_the_pair_and_prints_the_ca_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "--service", "kgm", "--namespace", "kgm-system", "--out", str(tmp_path)], {}) == 0
    bundle = capsys.readouterr().out.strip()
    assert base64.b64decode(bundle) == (tmp_path / "ca.crt").read_bytes()
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600


def test_certs_refuses_a_name_that_is_not_a_dns_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "--service", "Bad_Name", "--namespace", "x", "--out", str(tmp_path)], {}) == 2
    assert "kgm certs:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("environ", "kubeconfig_file", "found"),
    [
        ({}, False, False),
        ({}, True, True),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, True),
        ({"KUBECONFIG": "/nonexistent/config"}, True, False),  # an explicit KUBECONFIG wins
    ],
)
def test_a_kubernetes_configuration_is_detected_like_the_client_does(
    environ: dict[str, str], kubeconfig_file: bool, found: bool, tmp_path: Path
) -> None:
    if kubeconfig_file:
        (tmp_path / ".kube").mkdir()
        (tmp_path / ".kube" / "config").write_text("apiVersion: v1\n")
    assert kube_config_found(environ, tmp_path) is found


@pytest.mark.parametrize(
    ("given", "environ", "chosen"),
    [
        (None, {}, "demo"),
        (None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
        ("live", {}, None),
        ("demo", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "demo"),
        ("cluster.yaml", {}, "cluster.yaml"),
    ],
)
def test_the_inventory_is_live_in_a_cluster_and_the_demo_elsewhere(
    given: str | None, environ: dict[str, str], chosen: str | None, tmp_path: Path
) -> None:
    assert choose_inventory(given, environ, tmp_path) == chosen


def test_serve_with_a_broken_inventory_exits_2_without_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "cluster.yaml"
    broken.write_text("nodes: [{name: a, gpus: [{model: B300}]}]\n")
    run = subprocess.run(
        [sys.executable, "-m", "kgm.cli", "serve", "--inventory", str(broken), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "unknown GPU model 'B300'" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_refuses_half_a_tls_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--inventory", "demo", "--tls-cert", str(tmp_path / "c")], {}) == 2
    assert "go together" in capsys.readouterr().err


def test_log_lines_are_json_with_level_event_and_ids_and_no_secrets() -> None:
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kgm.test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("pod denied", extra={"event": "admission.denied", "uid": "u-1", "token": "s3cr3t"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["level"] == "warning"
    assert line["event"] == "admission.denied"
    assert line["logger"] == "kgm.test.logs"
    assert line["uid"] == "u-1"
    assert "s3cr3t" not in stream.getvalue()
    assert line["time"].endswith("+00:00")


def test_serve_with_an_unreachable_ledger_says_so_and_exits_2() -> None:
    run = serve_demo("--ledger", "postgresql:///nope?host=/nonexistent-socket-dir")
    assert run.returncode == 2
    assert "kgm serve: ledger" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_agent_without_its_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("kgm.agent", "inventory.node.podresources"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "grpc", None)  # what an install without [agent] sees
    assert main(["agent", "--node-name", "gpu-a1", "--once"], environ={}) == 2
    assert capsys.readouterr().err.strip() == AGENT_EXTRA_MISSING


def test_a_postgresql_ledger_without_its_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from inventory.ledger.sql import SqlLedger  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without [postgres] sees
    with pytest.raises(ValueError, match=r"pip install 'k8s-gpu-management\[postgres\]'"):
        SqlLedger.open("postgresql://kgm@db.example.test/kgm")


@pytest.mark.parametrize(
    ("argv", "environ", "mode"),
    [
        ([], {}, "recommend"),
        ([], {"KGM_MIG_PLANNER": "off"}, "off"),
        (["--mig-planner", "apply"], {"KGM_MIG_PLANNER": "off"}, "apply"),
    ],
)
def test_the_mig_planner_recommends_unless_told_otherwise(
    argv: list[str], environ: dict[str, str], mode: str
) -> None:
    args = _parser(environ).parse_args(["serve", *argv])
    assert args.mig_planner == mode
    assert (args.mig_config_namespace, args.mig_config_name) == ("gpu-operator", "kgm-mig-parted-config")


def test_applying_mig_layouts_without_a_cluster_is_refused_in_one_line() -> None:
    run = serve_demo("--mig-planner", "apply")
    assert run.returncode == 2
    assert (
        "kgm serve: --mig-planner apply changes a cluster's layouts: it needs the live inventory"
        in run.stderr
    )
    assert "Traceback" not in run.stderr
