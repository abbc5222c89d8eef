"""``GET /api/v1/gpu/mig/plan``: the planner's last plan as the OpenAPI document says, for every role,
and an empty plan where the planner is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.api import Role, TokenStore
from inventory.domain.mig_plan import GpuChange, MigPlan, NodeHold
from inventory.domain.model import NodeName
from inventory.layouts.planner import PlanView
from inventory.layouts.settings import PlannerMode
from tests.inventory.api import (
    NOW,
    Harness,
    ListLedger,
    assert_matches_spec,
    harness,
    write_tokens,
)
from tests.inventory.layouts.support import H100, h100_node

PATH = "/api/v1/gpu/mig/plan"
TWO_3G = h100_node("x", ["3g.40gb", "3g.40gb"]).gpus[0].mig_instances
PLAN = MigPlan(
    changes=(GpuChange(NodeName("a"), 1, H100.name, None, TWO_3G, (), "a GPU 1: MIG off -> 2 x 3g.40gb"),),
    held_back=(NodeHold(NodeName("b"), "changed 12 s ago; at least 300 s between changes of one node"),),
    summary="unmet demand 0.43 -> 0.00 GPU-equivalents",
)


def _harness(tmp_path: Path, view: PlanView | None) -> Harness:
    tokens = TokenStore.load(write_tokens(tmp_path / "tokens.yaml"))
    return harness(ListLedger(), tokens, mig_plan=None if view is None else (lambda: view))


@pytest.mark.parametrize("role", list(Role))
def test_every_role_reads_the_plan_as_the_document_says(tmp_path: Path, role: Role) -> None:
    view = PlanView(mode=PlannerMode.RECOMMEND, planned_at=NOW, plan=PLAN)
    reply = _harness(tmp_path, view).get(PATH, role=role)
    assert reply.status_code == 200
    assert_matches_spec(reply, PATH)
    data = reply.json()["data"]
    assert data["mode"] == "recommend" and data["applies"] is False
    (change,) = data["changes"]
    assert change["nodeName"] == "a" and change["gpu"] == 1
    assert change["before"] == {"migEnabled": False, "profiles": None, "description": "MIG off"}
    assert change["after"] == {"migEnabled": True, "profiles": {"3g.40gb": 2}, "description": "2 x 3g.40gb"}
    assert data["heldBack"] == [{"nodeName": "b", "reason": PLAN.held_back[0].reason}]


def test_without_a_planner_the_plan_is_empty_and_says_off(tmp_path: Path) -> None:
    reply = _harness(tmp_path, None).get(PATH)
    assert reply.status_code == 200
    assert_matches_spec(reply, PATH)
    assert reply.json()["data"] == {
        "mode": "off",
        "applies": False,
        "plannedAt": None,
        "summary": None,
        "changes": [],
        "heldBack": [],
        "reconfiguring": [],
    }


def test_the_plan_needs_a_token(tmp_path: Path) -> None:
    reply = _harness(tmp_path, None).get(PATH, role=None)
    assert reply.status_code == 401
    assert_matches_spec(reply, PATH)
