"""The alert rules as Prometheus itself reads them: ``promtool check rules`` on the PrometheusRule's groups,
and ``promtool test rules`` replaying series through the alerts whose thresholds carry a decision
(the quota at 90% of a limit, a GPU past 85 C, a certificate 14 days from expiry), each on both sides
of its line.

promtool comes from Debian's ``prometheus`` package, which ``.ci/run`` installs; where it is missing the
tests skip locally and fail in CI (``CI=true``), like the PostgreSQL ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.data import REPO

RULES = REPO / "manifests" / "monitoring" / "prometheus-rule.yaml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI") != "true",
    reason="promtool is not installed (Debian: apt-get install prometheus); CI installs it",
)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's ``spec`` is a Prometheus rules file (``groups:``) as it stands."""
    assert PROMTOOL is not None, "promtool is not installed: apt-get install prometheus"
    spec = yaml.safe_load(RULES.read_text())["spec"]
    path = tmp_path_factory.mktemp("rules") / "kgm-rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def firing_rules_file(rules_file: Path) -> Path:
    """The same rules without annotations: a unit test compares them rendered, which would tie these
    cases to wording; ``check rules`` above already parses their templates."""
    spec = yaml.safe_load(rules_file.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = rules_file.with_name("kgm-rules-without-annotations.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_promtool_accepts_every_rule(rules_file: Path) -> None:
    checked = _promtool("check", "rules", rules_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def _quota_series(used: float, limit: float) -> list[dict[str, str]]:
    labels = 'kind="GpuQuota", quota_namespace="ml", quota="nlp", team="nlp", unit="gpuEquivalents"'
    return [
        {"series": f'gpu_quota_used{{{labels}, instance="a"}}', "values": f"{used}x30"},
        {"series": f'gpu_quota_limit{{{labels}, instance="a"}}', "values": f"{limit}x30"},
    ]


QUOTA_ALERT = {
    "exp_labels": {
        "severity": "warning",
        "kind": "GpuQuota",
        "quota_namespace": "ml",
        "quota": "nlp",
        "team": "nlp",
        "unit": "gpuEquivalents",
    }
}

# (name, input series, alert, minute to evaluate at, whether it fires)
CASES: list[tuple[str, list[dict[str, str]], str, str, bool]] = [
    ("quota at 93% for 15 minutes fires", _quota_series(7.43, 8), "GPUQuotaNearlyUsed", "15m", True),
    ("quota at 93% for 5 minutes waits", _quota_series(7.43, 8), "GPUQuotaNearlyUsed", "5m", False),
    ("quota at 87.5% does not fire", _quota_series(7, 8), "GPUQuotaNearlyUsed", "15m", False),
    ("a limit of 0 is no quota", _quota_series(3, 0), "GPUQuotaNearlyUsed", "15m", False),
    (
        "a GPU at 88 C for 10 minutes fires",
        [
            {
                "series": 'gpu_temperature_celsius{Hostname="n1", gpu="0", UUID="GPU-1", modelName="A100"}',
                "values": "88x20",
            }
        ],
        "GPUHighTemperature",
        "10m",
        True,
    ),
    (
        "a GPU at 84 C does not fire",
        [
            {
                "series": 'gpu_temperature_celsius{Hostname="n1", gpu="0", UUID="GPU-1", modelName="A100"}',
                "values": "84x20",
            }
        ],
        "GPUHighTemperature",
        "10m",
        False,
    ),
    (
        # time() is 0 at the start of a unit test: an expiry 10 days out is under the 14-day line.
        "a certificate 10 days from expiry fires after an hour",
        [
            {
                "series": 'kgm_tls_certificate_expiry_timestamp_seconds{instance="a"}',
                "values": f"{10 * 86400}x120",
            }
        ],
        "KgmCertificateExpiringSoon",
        "90m",
        True,
    ),
    (
        "a certificate 60 days from expiry does not fire",
        [
            {
                "series": 'kgm_tls_certificate_expiry_timestamp_seconds{instance="a"}',
                "values": f"{60 * 86400}x120",
            }
        ],
        "KgmCertificateExpiringSoon",
        "90m",
        False,
    ),
]


def _expected_alerts(alert: str, fires: bool) -> list[dict[str, Any]]:
    if not fires:
        return []
    if alert == "GPUQuotaNearlyUsed":
        return [QUOTA_ALERT]
    if alert == "GPUHighTemperature":
        labels = {"Hostname": "n1", "gpu": "0", "UUID": "GPU-1", "modelName": "A100"}
        return [{"exp_labels": {"severity": "warning", **labels}}]
    return [{"exp_labels": {"severity": "warning", "instance": "a"}}]


@pytest.mark.parametrize(
    ("series", "alert", "at", "fires"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_the_alert_fires_on_its_side_of_the_line(
    firing_rules_file: Path, tmp_path: Path, series: list[dict[str, str]], alert: str, at: str, fires: bool
) -> None:
    unit = {
        "rule_files": [str(firing_rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": _expected_alerts(alert, fires)}
                ],
            }
        ],
    }
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    result = _promtool("test", "rules", path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
