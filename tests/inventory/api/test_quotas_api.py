"""``GET /api/v1/gpu/quotas``: every GPU quota with its limits and use, as the OpenAPI document says, for
every role (as the overview), and an empty list where there are none."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from inventory.api import Role, TokenStore
from inventory.domain.quota import Measure, Quota, QuotaLimits
from inventory.live.quotas import BadQuota, QuotaReport, QuotaView
from tests.inventory.api import (
    Harness,
    ListLedger,
    assert_matches_spec,
    harness,
    write_tokens,
)

PATH = "/api/v1/gpu/quotas"
NLP = Quota(
    kind="GpuQuota",
    namespace="ml",
    name="nlp",
    team="nlp",
    limits=QuotaLimits(gpu_equivalents=Decimal(8), cost_per_day=Decimal(500)),
)
PROFILE = Quota(
    kind="ResourceQuota",
    namespace="ml",
    name="profile",
    limits=QuotaLimits(gpu_equivalents=Decimal(4)),
    line="requests.nvidia.com/gpu",
)
REPORT = QuotaReport(
    quotas=[
        QuotaView(NLP, Measure(Fraction(52, 7), Decimal(560), Decimal("18.5")), 9, generation=3),
        QuotaView(PROFILE, Measure(Fraction(3, 7), Decimal(40), Decimal("1.6714")), 1),
    ],
    invalid=[BadQuota("vision", "broken", "spec.limits.memoryGB: not a quantity")],
)


def _harness(tmp_path: Path, report: QuotaReport | None) -> Harness:
    tokens = TokenStore.load(write_tokens(tmp_path / "tokens.yaml"))
    return harness(ListLedger(), tokens, quotas=None if report is None else (lambda: report))


@pytest.mark.parametrize("role", list(Role))
def test_every_role_reads_the_quotas_as_the_document_says(tmp_path: Path, role: Role) -> None:
    reply = _harness(tmp_path, REPORT).get(PATH, role=role)
    assert reply.status_code == 200
    assert_matches_spec(reply, PATH)
    data = reply.json()["data"]
    nlp, profile = data["quotas"]
    assert nlp == {
        "kind": "GpuQuota",
        "namespace": "ml",
        "name": "nlp",
        "team": "nlp",
        "scope": "team nlp",
        "line": None,
        "limits": {"gpuEquivalents": 8.0, "costPerDay": 500.0},
        "used": {
            "gpuEquivalents": 7.4286,
            "memoryGB": 560.0,
            "costPerHour": 18.5,
            "costPerDay": 444.0,
            "costPerMonth": 13505.0,
        },
        "utilization": {"gpuEquivalents": 0.9286, "costPerDay": 0.888},
        "holders": 9,
    }
    assert (profile["scope"], profile["line"], profile["team"]) == (
        "namespace ml",
        "requests.nvidia.com/gpu",
        None,
    )
    assert data["invalid"] == [
        {"namespace": "vision", "name": "broken", "message": "spec.limits.memoryGB: not a quantity"}
    ]
    assert data["currency"] == "USD"


def test_a_caller_without_a_token_is_refused(tmp_path: Path) -> None:
    assert _harness(tmp_path, REPORT).get(PATH, role=None).status_code == 401


def test_without_quotas_the_list_is_empty(tmp_path: Path) -> None:
    reply = _harness(tmp_path, None).get(PATH)
    assert reply.status_code == 200
    assert_matches_spec(reply, PATH)
    assert reply.json()["data"] == {"currency": "USD", "quotas": [], "invalid": []}
