"""``GET /api/v1/gpu/quotas``'s answer: every GPU quota, its limits and what it counts now, as JSON
(``QuotaList`` in the OpenAPI document)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from inventory.domain.quota import number
from inventory.live.quota_metrics import used_figures
from inventory.live.quotas import QuotaReport, QuotaView


def quota_list(report: QuotaReport) -> dict[str, Any]:
    return {
        "currency": report.currency,
        "quotas": [_quota(view) for view in report.quotas],
        "invalid": [{"namespace": b.namespace, "name": b.name, "message": b.message} for b in report.invalid],
    }


def _quota(view: QuotaView) -> dict[str, Any]:
    quota = view.quota
    limits = quota.limits.items()
    return {
        "kind": quota.kind,
        "namespace": quota.namespace,
        "name": quota.name,
        "team": quota.team,
        "scope": quota.scope,
        "line": quota.line,
        "limits": {unit.value: number(limit) for unit, limit in limits},
        "used": used_figures(view.used),
        # how full each limit is (1 = at the limit); a limit of 0 is full from the start
        "utilization": {
            unit.value: round(number(view.used.value(unit) / Fraction(limit)), 4) if limit else 1.0
            for unit, limit in limits
        },
        "holders": view.holders,
    }
