"""``GET /api/v1/gpu/mig/plan``'s answer: the MIG planner's last plan, as JSON (``MigPlan`` in the
OpenAPI document)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from inventory.domain.mig_candidates import Layout, describe
from inventory.domain.times import format_time
from inventory.layouts.planner import PlanView


def plan_view(view: PlanView) -> dict[str, Any]:
    plan = view.plan
    return {
        "mode": str(view.mode),
        "applies": view.applies,
        "plannedAt": format_time(view.planned_at) if view.planned_at is not None else None,
        "summary": plan.summary if plan is not None else None,
        "changes": [
            {
                "nodeName": change.node,
                "gpu": change.gpu,
                "model": change.model,
                "before": _layout(change.before),
                "after": _layout(change.after),
                "destroyed": len(change.destroyed),
                "reason": change.reason,
            }
            for change in (plan.changes if plan is not None else ())
        ],
        "heldBack": [
            {"nodeName": hold.node, "reason": hold.reason}
            for hold in (plan.held_back if plan is not None else ())
        ],
        "reconfiguring": [{"nodeName": a.node, "config": a.config} for a in view.applying],
    }


def _layout(layout: Layout) -> dict[str, Any]:
    profiles = None if layout is None else dict(sorted(Counter(i.profile.name for i in layout).items()))
    return {"migEnabled": layout is not None, "profiles": profiles, "description": describe(layout)}
