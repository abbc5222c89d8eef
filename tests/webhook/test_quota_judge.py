"""webhook.quota.judge: the pod as the mutation leaves it is what is judged; the admission's mark."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from inventory.domain.quota import QuotaAsk, Refusal
from tests.webhook.pods import container, gpus, pod
from webhook.mutation import Admit, Deny
from webhook.quota import judge, patched

MARK = "gpu.kgm.io/quota-admission"


class Checker:
    def __init__(self) -> None:
        self.asks: list[QuotaAsk] = []

    def __call__(self, ask: QuotaAsk) -> list[Refusal]:
        self.asks.append(ask)
        return []


def test_the_ask_is_the_pod_after_the_rewrite_with_the_team_the_webhook_labels() -> None:
    original = pod(gpus(1))
    decision = Admit(
        patch=[
            {"op": "remove", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu"},
            {
                "op": "add",
                "path": "/spec/containers/0/resources/limits/nvidia.com~1mig-1g.10gb",
                "value": "1",
            },
            {"op": "remove", "path": "/spec/containers/0/resources/requests/nvidia.com~1gpu"},
            {
                "op": "add",
                "path": "/spec/containers/0/resources/requests/nvidia.com~1mig-1g.10gb",
                "value": "1",
            },
            {"op": "add", "path": "/metadata/labels", "value": {"gpu.kgm.io/team": "nlp"}},
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        ]
    )
    before = copy.deepcopy(original)
    check = Checker()
    judged = judge(original, decision, uid="u1", namespace="ml", dry_run=False, check=check)
    (ask,) = check.asks
    assert (ask.key, ask.namespace, ask.team, dict(ask.resources)) == (
        "u1",
        "ml",
        "nlp",
        {"nvidia.com/mig-1g.10gb": 1},
    )
    assert original == before  # the review's pod is left as it is
    assert isinstance(judged, Admit)
    result = jsonpatch.apply_patch(original, judged.patch)
    assert result["metadata"]["annotations"] == {"a": "b", MARK: "u1"}


def test_a_copied_mark_is_replaced_by_this_admission_s() -> None:
    original = pod(gpus(1), annotations={MARK: "someone-else"})
    check = Checker()
    judged = judge(original, Admit(), uid="u2", namespace="ml", dry_run=False, check=check)
    assert check.asks[0].judged_as == "someone-else"
    assert isinstance(judged, Admit)
    assert jsonpatch.apply_patch(original, judged.patch)["metadata"]["annotations"][MARK] == "u2"


def test_a_dry_run_and_a_reservation_claim_carry_no_mark() -> None:
    for original, dry_run in (
        (pod(gpus(1)), True),
        (pod(gpus(1), annotations={"gpu.kgm.io/allocation-id": "r"}), False),
    ):
        check = Checker()
        decision = Admit()
        assert judge(original, decision, uid="u", namespace="ml", dry_run=dry_run, check=check) is decision
        assert check.asks[0].dry_run is dry_run


def test_a_pod_without_gpus_is_not_judged() -> None:
    check = Checker()
    decision = Admit()
    assert (
        judge(
            pod(container("c", {"cpu": "1"})), decision, uid="u", namespace="ml", dry_run=False, check=check
        )
        is decision
    )
    assert check.asks == []


def test_refusals_become_one_403_denial() -> None:
    def refuse(ask: QuotaAsk) -> list[Any]:
        class R:
            message = "team nlp: 8 of 8 GPU-equivalents used, this pod needs 1 (GpuQuota ml/q)"

        return [R(), R()]

    denied = judge(pod(gpus(1)), Admit(), uid="u", namespace="ml", dry_run=False, check=refuse)
    assert isinstance(denied, Deny)
    assert (denied.code, denied.reason) == (403, "Forbidden")
    assert denied.message.count("GpuQuota ml/q") == 2


def test_patched_applies_add_replace_remove_and_array_appends() -> None:
    document: dict[str, Any] = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {"containers": [{"n": 1}, {"n": 2}]},
    }
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/containers/-", "value": {"n": 3}},
        {"op": "add", "path": "/spec/containers/0", "value": {"n": 0}},
        {"op": "replace", "path": "/spec/containers/1/n", "value": 9},
        {"op": "remove", "path": "/spec/containers/2"},
        {"op": "add", "path": "/metadata/labels/gpu.kgm.io~1team", "value": "x"},
        {"op": "remove", "path": "/metadata/labels/a"},
    ]
    before = copy.deepcopy(document)
    assert patched(document, ops) == jsonpatch.apply_patch(document, ops)
    assert document == before
    # what the quota does not read is not applied
    assert patched(document, [{"op": "add", "path": "/spec/schedulerName", "value": "kgm"}]) is document


def test_a_checker_that_knows_no_quota_is_not_asked_and_the_pod_not_read() -> None:
    class Idle(Checker):
        def active(self) -> bool:
            return False

    check = Idle()
    decision = Admit(patch=[{"op": "add", "path": "/metadata/labels", "value": {"gpu.kgm.io/team": "nlp"}}])
    assert judge(pod(gpus(1)), decision, uid="u", namespace="ml", dry_run=False, check=check) is decision
    assert check.asks == []
