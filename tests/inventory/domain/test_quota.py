"""Quota accounting: what whole GPUs and MIG instances count, what a quota allows, what it says."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.prices import PriceTable
from inventory.domain.quota import (
    Holding,
    Measure,
    Quota,
    QuotaError,
    QuotaLimits,
    Unit,
    decide,
    parse_gpuquota,
    parse_resourcequota,
    pod_claim,
    unit_measure,
    upper_measure,
    usage,
)

CATALOGUE = builtin_catalogue()
PRICES = PriceTable()
A100 = CATALOGUE.model("A100-80GB")
H100 = CATALOGUE.model("H100-80GB")
A30 = CATALOGUE.model("A30-24GB")
T4 = CATALOGUE.model("T4-16GB")


@pytest.mark.parametrize(
    ("resource", "model", "gpu_equivalents", "memory_gb", "hourly"),
    [
        ("nvidia.com/gpu", A100, Fraction(1), 80, Decimal("2.40")),
        ("nvidia.com/gpu", T4, Fraction(1), 16, Decimal("0.35")),
        ("nvidia.com/mig-3g.40gb", A100, Fraction(3, 7), 40, Decimal("2.40") * 3 / 7),
        ("nvidia.com/mig-1g.10gb", H100, Fraction(1, 7), 10, Decimal("3.90") / 7),
        ("nvidia.com/mig-7g.80gb", H100, Fraction(1), 80, Decimal("3.90")),
        ("nvidia.com/mig-2g.12gb", A30, Fraction(2, 4), 12, Decimal("0.90") / 2),
        ("nvidia.com/mig-1g.10gb.me", A100, Fraction(1, 7), 10, Decimal("2.40") / 7),
    ],
)
def test_a_unit_counts_its_share_of_compute_slices_its_memory_and_its_price(
    resource: str, model: Any, gpu_equivalents: Fraction, memory_gb: int, hourly: Decimal
) -> None:
    assert unit_measure(resource, model, PRICES) == Measure(gpu_equivalents, Decimal(memory_gb), hourly)


def test_seven_1g_instances_are_exactly_one_gpu() -> None:
    one = unit_measure("nvidia.com/mig-1g.10gb", A100, PRICES)
    assert one is not None
    assert one.times(7).gpu_equivalents == 1


def test_a_profile_the_model_lacks_measures_nothing() -> None:
    assert unit_measure("nvidia.com/mig-3g.40gb", T4, PRICES) is None


@pytest.mark.parametrize(
    ("resource", "models", "expected"),
    [
        # admission does not know the model yet: the most any offered model would count
        ("nvidia.com/gpu", [A100, T4], Measure(Fraction(1), Decimal(80), Decimal("2.40"))),
        (
            "nvidia.com/mig-1g.10gb",
            [A100, H100],
            Measure(Fraction(1, 7), Decimal(10), PRICES.mig_instance(H100, H100.profile("1g.10gb"))),
        ),
        # offered by no model of the cluster: the catalogue's reading of the name, no price
        ("nvidia.com/mig-2g.12gb", [A100], Measure(Fraction(1, 2), Decimal(12))),
        ("nvidia.com/gpu", [], Measure(Fraction(1))),
        ("nvidia.com/mig-9g.999gb", [], Measure()),
    ],
)
def test_a_pod_not_placed_counts_the_most_its_resource_counts_anywhere(
    resource: str, models: list[Any], expected: Measure
) -> None:
    assert upper_measure(resource, models, PRICES) == expected


NLP = Quota(
    kind="GpuQuota", namespace="ml", name="nlp", team="nlp", limits=QuotaLimits(gpu_equivalents=Decimal(8))
)
ML = Quota(kind="GpuQuota", namespace="ml", name="all", limits=QuotaLimits(memory_gb=Decimal(160)))


def held(namespace: str, team: str | None, gpus: Fraction, memory: int = 0, hourly: str = "0") -> Holding:
    return Holding(namespace, team, Measure(gpus, Decimal(memory), Decimal(hourly)))


def test_a_team_quota_counts_the_teams_pods_in_every_namespace_a_namespace_quota_its_namespace() -> None:
    holdings = [
        held("ml", "nlp", Fraction(1), 80),
        held("other", "nlp", Fraction(3, 7), 40),
        held("ml", "vision", Fraction(2), 160),
        held("other", None, Fraction(5), 400),
    ]
    assert usage(NLP, holdings).gpu_equivalents == Fraction(10, 7)
    assert usage(ML, holdings).memory_gb == 240


MIG_3G = Measure(Fraction(3, 7), Decimal(40), Decimal("1.0"))


@pytest.mark.parametrize(
    ("limits", "holdings", "asked", "message"),
    [
        (
            QuotaLimits(gpu_equivalents=Decimal(8)),
            [held("ml", "nlp", Fraction(7)), held("ml", "nlp", Fraction(3, 7))],
            Measure(Fraction(1), Decimal(80)),
            "team nlp: 7.43 of 8 GPU-equivalents used, this pod needs 1 (GpuQuota ml/q)",
        ),
        (
            QuotaLimits(memory_gb=Decimal(100)),
            [held("ml", "nlp", Fraction(1), 80)],
            MIG_3G,
            "team nlp: 80 of 100 GB of GPU memory used, this pod needs 40 (GpuQuota ml/q)",
        ),
        (
            QuotaLimits(cost_per_hour=Decimal(10)),
            [held("ml", "nlp", Fraction(1), hourly="9.5")],
            MIG_3G,
            "team nlp: 9.50 of 10.00 USD per hour used, this pod needs 1.00 (GpuQuota ml/q)",
        ),
        (
            QuotaLimits(cost_per_day=Decimal(240)),
            [held("ml", "nlp", Fraction(1), hourly="9.5")],
            MIG_3G,
            "team nlp: 228.00 of 240.00 USD per day used, this pod needs 24.00 (GpuQuota ml/q)",
        ),
        (
            QuotaLimits(cost_per_month=Decimal(7000)),
            [held("ml", "nlp", Fraction(1), hourly="9")],
            MIG_3G,
            "team nlp: 6570.00 of 7000.00 USD per month used, this pod needs 730.00 (GpuQuota ml/q)",
        ),
    ],
    ids=["gpu-equivalents", "memory", "cost-per-hour", "cost-per-day", "cost-per-month"],
)
def test_a_pod_past_a_limit_is_refused_naming_quota_limit_used_and_asked(
    limits: QuotaLimits, holdings: list[Holding], asked: Measure, message: str
) -> None:
    quota = Quota(kind="GpuQuota", namespace="ml", name="q", team="nlp", limits=limits)
    refusals = decide([quota], namespace="x", team="nlp", asked=asked, holdings=holdings)
    assert [r.message for r in refusals] == [message]


@pytest.mark.parametrize(
    ("used", "asked", "fits"),
    [
        (Fraction(7), Fraction(1), True),  # exactly at the limit
        (Fraction(53, 7), Fraction(3, 7), True),  # 7 4/7 + 3/7 = 8, exactly, no rounding
        (Fraction(54, 7), Fraction(3, 7), False),
        (Fraction(9), Fraction(0), True),  # over a lowered limit, but it asks none
    ],
)
def test_the_last_unit_fits_exactly(used: Fraction, asked: Fraction, fits: bool) -> None:
    refusals = decide(
        [NLP], namespace="ml", team="nlp", asked=Measure(asked), holdings=[held("ml", "nlp", used)]
    )
    assert (refusals == []) is fits


def test_quotas_of_other_namespaces_and_teams_do_not_judge_the_pod() -> None:
    holdings = [held("ml", "nlp", Fraction(8))]
    assert decide([NLP], namespace="ml", team="vision", asked=Measure(Fraction(1)), holdings=holdings) == []
    assert decide([NLP], namespace="ml", team=None, asked=Measure(Fraction(1)), holdings=holdings) == []


def test_a_resourcequota_names_its_line() -> None:
    quota = parse_resourcequota(
        {"metadata": {"namespace": "ml", "name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "2"}}}
    )
    assert quota is not None
    (refusal,) = decide(
        [quota],
        namespace="ml",
        team=None,
        asked=Measure(Fraction(3, 7)),
        holdings=[held("ml", None, Fraction(2))],
    )
    assert refusal.message == (
        "namespace ml: 2 of 2 GPU-equivalents used, this pod needs 0.43 "
        "(ResourceQuota ml/gpus, requests.nvidia.com/gpu)"
    )


@pytest.mark.parametrize(
    ("hard", "spec_extra", "limit", "line"),
    [
        ({"requests.nvidia.com/gpu": "8"}, {}, Decimal(8), "requests.nvidia.com/gpu"),
        ({"nvidia.com/gpu": "4"}, {}, Decimal(4), "nvidia.com/gpu"),
        ({"requests.nvidia.com/gpu": "8", "nvidia.com/gpu": "4"}, {}, Decimal(4), "nvidia.com/gpu"),
        ({"requests.nvidia.com/gpu": "2k"}, {}, Decimal(2000), "requests.nvidia.com/gpu"),
        ({"requests.cpu": "8"}, {}, None, None),
        ({"requests.nvidia.com/gpu": "8"}, {"scopes": ["BestEffort"]}, None, None),
        ({"requests.nvidia.com/gpu": "8"}, {"scopeSelector": {"matchExpressions": []}}, None, None),
        ({"requests.nvidia.com/gpu": "eight"}, {}, None, None),
    ],
)
def test_resourcequota_gpu_lines_are_gpu_equivalents(
    hard: dict[str, str], spec_extra: dict[str, Any], limit: Decimal | None, line: str | None
) -> None:
    quota = parse_resourcequota(
        {"metadata": {"namespace": "ml", "name": "q"}, "spec": {"hard": hard, **spec_extra}}
    )
    if limit is None:
        assert quota is None
    else:
        assert quota is not None
        assert (quota.limits.gpu_equivalents, quota.line, quota.team) == (limit, line, None)


def test_a_gpuquota_reads_every_limit() -> None:
    quota = parse_gpuquota(
        {
            "metadata": {"namespace": "ml", "name": "nlp"},
            "spec": {
                "team": "nlp",
                "limits": {
                    "gpuEquivalents": 8,
                    "memoryGB": "320",
                    "costPerHour": 20.5,
                    "costPerDay": 400,
                    "costPerMonth": 9000,
                },
            },
        }
    )
    assert quota.team == "nlp"
    assert quota.limits.items() == [
        (Unit.GPU_EQUIVALENTS, Decimal(8)),
        (Unit.MEMORY_GB, Decimal(320)),
        (Unit.COST_PER_HOUR, Decimal("20.5")),
        (Unit.COST_PER_DAY, Decimal(400)),
        (Unit.COST_PER_MONTH, Decimal(9000)),
    ]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"limits": {"gpuEquivalents": -1}}, "spec.limits.gpuEquivalents"),
        ({"limits": {"memoryGB": "lots"}}, "spec.limits.memoryGB"),
        ({"limits": {"costPerDay": True}}, "spec.limits.costPerDay"),
        ({"limits": []}, "spec.limits"),
        ({"team": "not a label"}, "spec.team"),
    ],
)
def test_a_bad_gpuquota_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(QuotaError, match=field):
        parse_gpuquota({"metadata": {"namespace": "ml", "name": "q"}, "spec": spec})


def _pod(phase: str = "Pending", node: str | None = None, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u1",
            "namespace": "ml",
            "labels": {"gpu.kgm.io/team": "nlp"},
            "annotations": annotations,
        },
        "spec": {
            **({"nodeName": node} if node else {}),
            "containers": [{"name": "a", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "2"}}}],
        },
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("pod", "counted"),
    [
        (_pod("Pending"), True),  # not scheduled yet: a ResourceQuota counts it too
        (_pod("Running", node="n1"), True),
        (_pod("Succeeded", node="n1"), False),
        (_pod("Failed", node="n1"), False),
    ],
)
def test_every_non_terminal_gpu_pod_counts(pod: dict[str, Any], counted: bool) -> None:
    claim = pod_claim(pod, admission_key="a", reservation_key="r")
    assert (claim is not None) is counted
    if claim is not None:
        assert (claim.namespace, claim.team, dict(claim.resources)) == (
            "ml",
            "nlp",
            {"nvidia.com/mig-3g.40gb": 2},
        )


def test_a_pod_names_the_admission_and_reservation_it_stands_for() -> None:
    claim = pod_claim(_pod(a="adm-1", r="res-1"), admission_key="a", reservation_key="r")
    assert claim is not None
    assert (claim.admission, claim.reservation) == ("adm-1", "res-1")
