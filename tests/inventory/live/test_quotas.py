"""The quota book: what it counts (pods bound and pending, reservations, fresh admissions), holds kept
until the pod shows up or their time passes, dry runs that take nothing, and status and metrics."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inventory.domain.allocation import Allocation, Status
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.offer import offer_of
from inventory.domain.quota import QuotaAsk
from inventory.kube import KubeNotFoundError
from inventory.live.quota_metrics import QuotaCollector
from inventory.live.quota_watches import QuotaStatusWriter
from inventory.live.quotas import QuotaBook
from inventory.live.static import cache_of

CLUSTER = parse_cluster(
    {
        "nodes": [
            {"name": "a100", "gpus": [{"model": "A100-80GB", "count": 2, "mig": ["3g.40gb", "3g.40gb"]}]},
            {"name": "h100", "gpus": [{"model": "H100-80GB", "count": 4}]},
        ]
    }
)
MIG = "nvidia.com/mig-3g.40gb"
GPU = "nvidia.com/gpu"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gpuquota(name: str, namespace: str = "ml", team: str | None = None, **limits: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"limits": limits}
    if team is not None:
        spec["team"] = team
    return {"metadata": {"name": name, "namespace": namespace, "generation": 2}, "spec": spec}


def pod(
    uid: str, resources: dict[str, str], *, namespace: str = "ml", team: str | None = "nlp", **extra: Any
) -> dict[str, Any]:
    annotations = extra.pop("annotations", {})
    return {
        "metadata": {
            "uid": uid,
            "name": uid,
            "namespace": namespace,
            "labels": {"gpu.kgm.io/team": team} if team else {},
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "c", "resources": {"limits": resources}}], **extra},
        "status": {"phase": "Running" if "nodeName" in extra else "Pending"},
    }


def book(
    clock: Clock | None = None, reservations: list[Allocation] | None = None, ttl: float = 30.0
) -> QuotaBook:
    cache = cache_of(CLUSTER)
    offer = offer_of(CLUSTER)
    return QuotaBook(
        snapshot=cache.snapshot,
        offer=lambda: offer,
        prices=CLUSTER.prices,
        catalogue=CLUSTER.catalogue,
        reservations=lambda: reservations or [],
        assume_ttl_s=ttl,
        clock=clock or Clock(),
    )


def ask(key: str, resources: dict[str, int], **fields: Any) -> QuotaAsk:
    return QuotaAsk(**{"key": key, "namespace": "ml", "team": "nlp", "resources": resources, **fields})


def test_bound_pods_count_on_their_node_s_model_and_pending_ones_at_the_most_they_could() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=8, memoryGB=1000, costPerHour=100)])
    quotas.replace_pods(
        [
            pod("bound-mig", {MIG: "1"}, nodeName="a100"),  # A100: 3/7, 40 GB, 2.40 * 3/7
            pod("bound-gpu", {GPU: "1"}, nodeName="h100"),  # H100: 1, 80 GB, 3.90
            pod("pending-gpu", {GPU: "1"}),  # the largest whole GPU offered: H100's 80 GB and 3.90
            pod("done", {GPU: "1"}, nodeName="h100") | {"status": {"phase": "Succeeded"}},
            pod("other-team", {GPU: "1"}, team="vision"),
        ]
    )
    (view,) = quotas.views()
    assert view.used.gpu_equivalents == Fraction(1) + Fraction(1) + Fraction(3, 7)
    assert view.used.memory_gb == 40 + 80 + 80
    assert view.used.hourly == Decimal("2.40") * 3 / 7 + Decimal("3.90") * 2
    assert view.holders == 3


def test_the_last_unit_goes_to_one_admission_and_its_hold_lasts_until_the_pod_shows_up() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=2)])
    quotas.replace_pods([pod("p0", {GPU: "1"}, nodeName="h100")])
    assert quotas.admit(ask("adm-1", {GPU: 1})) == []
    (refusal,) = quotas.admit(ask("adm-2", {GPU: 1}))
    assert refusal.message == "team nlp: 2 of 2 GPU-equivalents used, this pod needs 1 (GpuQuota ml/q)"
    # the first admission's pod shows up: it counts itself, its hold is dropped, nothing counted twice
    quotas.apply_pod("ADDED", pod("p1", {GPU: "1"}, annotations={"gpu.kgm.io/quota-admission": "adm-1"}))
    (view,) = quotas.views()
    assert (view.used.gpu_equivalents, view.holders) == (2, 2)


def test_a_hold_whose_pod_never_comes_lapses_after_its_ttl() -> None:
    clock = Clock()
    quotas = book(clock, ttl=30.0)
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=1)])
    assert quotas.admit(ask("adm-1", {GPU: 1})) == []
    assert quotas.admit(ask("adm-2", {GPU: 1}))
    clock.now += 30.0
    assert quotas.admit(ask("adm-3", {GPU: 1})) == []


def test_a_dry_run_is_judged_but_takes_nothing() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=1)])
    assert quotas.admit(ask("dry", {GPU: 1}, dry_run=True)) == []
    assert quotas.admit(ask("real", {GPU: 1})) == []
    assert quotas.admit(ask("dry-2", {GPU: 1}, dry_run=True))


def test_a_reinvocation_of_a_held_admission_is_not_counted_twice() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=1)])
    assert quotas.admit(ask("adm-1", {GPU: 1})) == []
    assert quotas.admit(ask("adm-1b", {GPU: 1}, judged_as="adm-1")) == []
    # a copied mark that names no hold of this namespace is judged like any pod
    assert quotas.admit(ask("adm-2", {GPU: 1}, judged_as="someone-else"))
    assert quotas.admit(ask("adm-3", {GPU: 1}, namespace="other", judged_as="adm-1"))


def reservation(rid: str, *, team: str | None = "nlp", status: Status = Status.RESERVED) -> Allocation:
    return Allocation(
        id=rid,
        namespace="ml",
        pod="later",
        pod_uid=None,
        node="h100",
        resource=GPU,
        count=1,
        gpu_model="H100-80GB",
        hourly_price=Decimal("3.90"),
        status=status,
        start=datetime(2026, 12, 1, tzinfo=UTC),
        team=team,
    )


def test_open_reservations_count_until_their_pod_claims_them() -> None:
    quotas = book(reservations=[reservation("r1"), reservation("r2", status=Status.ACTIVE)])
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=2, costPerHour="3.90")])
    (view,) = quotas.views()
    assert (view.used.gpu_equivalents, view.used.hourly, view.holders) == (1, Decimal("3.90"), 1)
    (refusal,) = quotas.admit(ask("adm", {"nvidia.com/mig-3g.40gb": 1}))
    assert refusal.message.startswith("team nlp: 3.90 of 3.90 USD per hour used, this pod needs 1.03")
    # the pod claiming the reservation is what it holds: admitted without counting again
    assert quotas.admit(ask("claim", {GPU: 1}, reservation="r1")) == []
    quotas.apply_pod(
        "ADDED", pod("p", {GPU: "1"}, nodeName="h100", annotations={"gpu.kgm.io/allocation-id": "r1"})
    )
    (view,) = quotas.views()
    assert (view.used.gpu_equivalents, view.holders) == (1, 1)


def test_a_resourcequota_gpu_line_counts_mig_instances_as_their_share() -> None:
    quotas = book()
    quotas.replace_resourcequotas(
        [
            {
                "metadata": {"name": "compute", "namespace": "ml"},
                "spec": {"hard": {"requests.nvidia.com/gpu": "1"}},
            }
        ]
    )
    quotas.replace_pods([pod("a", {MIG: "1"}, nodeName="a100"), pod("b", {MIG: "1"}, nodeName="a100")])
    (refusal,) = quotas.admit(ask("adm", {MIG: 1}))
    assert refusal.message == (
        "namespace ml: 0.86 of 1 GPU-equivalents used, this pod needs 0.43 "
        "(ResourceQuota ml/compute, requests.nvidia.com/gpu)"
    )


def test_quotas_follow_their_watch_events() -> None:
    quotas = book()
    quotas.apply_gpuquota("ADDED", gpuquota("q", team="nlp", gpuEquivalents=0))
    assert quotas.admit(ask("a", {GPU: 1}))
    quotas.apply_gpuquota("MODIFIED", gpuquota("q", team="nlp", gpuEquivalents=1))
    assert quotas.admit(ask("b", {GPU: 1})) == []
    quotas.apply_gpuquota("DELETED", gpuquota("q"))
    assert quotas.views() == []
    quotas.apply_gpuquota("ADDED", gpuquota("bad", gpuEquivalents=-1))
    (bad,) = quotas.bad()
    assert "spec.limits.gpuEquivalents" in bad.message


def test_concurrent_admissions_on_the_last_unit_have_exactly_one_winner() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=1)])
    start = threading.Barrier(16)
    results: list[bool] = []

    def admit(index: int) -> None:
        start.wait()
        results.append(quotas.admit(ask(f"adm-{index}", {GPU: 1})) == [])

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]


class Store:
    def __init__(self, missing: set[str] | None = None) -> None:
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.missing = missing or set()

    def update_gpuquota_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if name in self.missing:
            raise KubeNotFoundError("gone")
        self.writes.append((namespace, name, status))
        return {}


@pytest.mark.parametrize("leader", [True, False])
def test_the_leader_writes_each_gpuquota_status_once_per_change(leader: bool) -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=8), gpuquota("bad", memoryGB="x")])
    quotas.replace_pods([pod("p", {GPU: "1"}, nodeName="h100")])
    store = Store()
    writer = QuotaStatusWriter(
        quotas, store, is_leader=lambda: leader, wall_clock=lambda: datetime(2026, 12, 6, 5, 0, tzinfo=UTC)
    )
    assert writer.write_once() == (2 if leader else 0)
    assert writer.write_once() == 0
    if leader:
        assert sorted(store.writes)[1] == (
            "ml",
            "q",
            {
                "used": {
                    "gpuEquivalents": 1.0,
                    "memoryGB": 80.0,
                    "costPerHour": 3.9,
                    "costPerDay": 93.6,
                    "costPerMonth": 2847.0,
                },
                "pods": 1,
                "message": "",
                "observedGeneration": 2,
                "updatedAt": "2026-12-06T05:00:00Z",
            },
        )
        assert "spec.limits.memoryGB" in sorted(store.writes)[0][2]["message"]


def test_metrics_show_used_and_limit_per_quota_and_unit() -> None:
    quotas = book()
    quotas.replace_gpuquotas([gpuquota("q", team="nlp", gpuEquivalents=8, costPerDay=100)])
    quotas.replace_pods([pod("p", {MIG: "1"}, nodeName="a100")])
    registry = CollectorRegistry()
    registry.register(QuotaCollector(quotas.views))
    labels = {"kind": "GpuQuota", "quota_namespace": "ml", "quota": "q", "team": "nlp"}
    assert registry.get_sample_value("gpu_quota_limit", labels | {"unit": "gpuEquivalents"}) == 8
    assert registry.get_sample_value("gpu_quota_used", labels | {"unit": "gpuEquivalents"}) == pytest.approx(
        3 / 7
    )
    assert registry.get_sample_value("gpu_quota_used", labels | {"unit": "costPerDay"}) == pytest.approx(
        2.4 * 3 / 7 * 24
    )
    assert registry.get_sample_value("gpu_quota_used", labels | {"unit": "memoryGB"}) is None  # no such limit


def test_a_reservation_without_a_team_counts_for_its_namespace_as_the_webhook_labels_pods() -> None:
    quotas = book(reservations=[replace(reservation("r1"), team=None)])
    quotas.replace_gpuquotas([gpuquota("q", team="ml", gpuEquivalents=4)])
    (view,) = quotas.views()
    assert view.used.gpu_equivalents == 1
