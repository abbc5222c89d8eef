from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from extender.bind import BindError, InMemoryBinder
from extender.gpu_extender import GpuExtender
from inventory.domain.allocation import Allocation, Status
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from tests.extender.clusters import cache, extender, gpu_pod, node

LAST_SLICE = [node("n", mig=["3g.40gb"])]
ONE = {"nvidia.com/mig-3g.40gb": "1"}
N = NodeName("n")


def test_many_concurrent_binds_on_the_last_slice_exactly_one_wins() -> None:
    ext, c = extender(LAST_SLICE)
    pods = [gpu_pod(f"p{i}", ONE) for i in range(32)]
    for pod in pods:
        assert ext.filter(pod, ["n"]).passed == ["n"]  # every one saw room: the race is at bind
    barrier = threading.Barrier(len(pods))
    results: dict[str, str | None] = {}

    def bind(pod: dict[str, Any]) -> None:
        barrier.wait()
        results[pod["metadata"]["uid"]] = ext.bind(
            namespace="ml", name=pod["metadata"]["name"], uid=pod["metadata"]["uid"], node="n"
        )

    threads = [threading.Thread(target=bind, args=(pod,)) for pod in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [uid for uid, error in results.items() if error is None]
    assert len(winners) == 1
    assert all(
        "no free mig-3g.40gb: 0 of 1 free" in (e or "") for u, e in results.items() if u not in winners
    )
    assert c.snapshot().capacity(N).mig_free["nvidia.com/mig-3g.40gb"] == 0


def test_a_retried_bind_is_idempotent_and_a_bind_elsewhere_is_refused() -> None:
    ext, c = extender([node("n", count=2)])
    pod = gpu_pod("p", {"nvidia.com/gpu": "1"})
    ext.filter(pod, ["n"])
    assert ext.bind(namespace="ml", name="pod-p", uid="p", node="n") is None
    assert ext.bind(namespace="ml", name="pod-p", uid="p", node="n") is None
    assert ext.bind(namespace="ml", name="pod-p", uid="p", node="m") == "pod already bound to n"
    assert c.snapshot().capacity(N).full_gpus_free == 1


def test_a_bind_onto_capacity_that_is_gone_answers_an_error() -> None:
    ext, _ = extender(LAST_SLICE)
    first, second = gpu_pod("a", ONE), gpu_pod("b", ONE)
    ext.filter(first, ["n"])
    ext.filter(second, ["n"])
    assert ext.bind(namespace="ml", name="pod-a", uid="a", node="n") is None
    error = ext.bind(namespace="ml", name="pod-b", uid="b", node="n")
    assert error == "node n no longer fits the pod: no free mig-3g.40gb: 0 of 1 free"


def test_a_pod_bind_never_saw_is_refused_standalone() -> None:
    ext, _ = extender(LAST_SLICE)
    assert "was not seen by filter" in (ext.bind(namespace="ml", name="x", uid="x", node="n") or "")


class FailingBinder:
    def bind(self, pod: Mapping[str, Any], node: str, *, timeout_s: float) -> None:
        raise BindError("binding failed: the API server said no")


def test_a_failed_binding_rolls_the_assumption_back() -> None:
    c = cache(LAST_SLICE)
    ext = GpuExtender(cache=c, binder=FailingBinder(), prices=PriceTable())
    pod = gpu_pod("p", ONE)
    ext.filter(pod, ["n"])
    assert (
        ext.bind(namespace="ml", name="pod-p", uid="p", node="n") == "binding failed: the API server said no"
    )
    assert c.snapshot().capacity(N).mig_free["nvidia.com/mig-3g.40gb"] == 1
    assert c.assumed("p") is None


def test_against_a_cluster_bind_fetches_a_pod_it_did_not_filter() -> None:
    c = cache(LAST_SLICE)
    pod = gpu_pod("p", ONE)
    fetched: list[tuple[str, str]] = []

    def fetch(namespace: str, name: str, timeout_s: float) -> dict[str, Any]:
        fetched.append((namespace, name))
        return pod

    ext = GpuExtender(cache=c, binder=InMemoryBinder(c), prices=PriceTable(), fetch_pod=fetch)
    assert ext.bind(namespace="ml", name="pod-p", uid="p", node="n") is None
    assert fetched == [("ml", "pod-p")]
    assert (
        ext.bind(namespace="ml", name="pod-q", uid="q", node="n")
        == "pod ml/pod-q was replaced (UID q is gone)"
    )


RESERVATION = "res-1"
HELD = {"nvidia.com/mig-3g.40gb": 1}


def reserved_row(namespace: str, pod: str) -> Allocation:
    return Allocation(
        id=RESERVATION,
        namespace=namespace,
        pod=pod,
        pod_uid=None,
        node="n",
        resource="nvidia.com/mig-3g.40gb",
        count=1,
        gpu_model="H100-80GB",
        hourly_price=Decimal("1"),
        status=Status.RESERVED,
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("row", "namespace", "name", "takes_the_hold"),
    [
        (reserved_row("ml", "pod-p"), "ml", "pod-p", True),
        (reserved_row("ml", ""), "ml", "pod-p", True),  # no pod named: any pod of the namespace
        (reserved_row("ml", "pod-p"), "other", "pod-p", False),
        (reserved_row("ml", ""), "other", "pod-p", False),
        (reserved_row("ml", "llm-serve"), "ml", "pod-p", False),
        (replace(reserved_row("ml", "pod-p"), status=Status.ACTIVE), "ml", "pod-p", False),
        (None, "ml", "pod-p", False),  # no such row
    ],
)
def test_only_the_pod_a_reservation_is_for_takes_its_hold(
    row: Allocation | None, namespace: str, name: str, takes_the_hold: bool
) -> None:
    c = cache(LAST_SLICE)
    c.assume(RESERVATION, N, HELD, ttl_s=3600)
    rows = {RESERVATION: row} if row is not None else {}
    ext = GpuExtender(cache=c, binder=InMemoryBinder(c), prices=PriceTable(), reservation=rows.get)
    pod = gpu_pod("p", ONE, annotations={"gpu.kgm.io/allocation-id": RESERVATION})
    pod["metadata"].update(namespace=namespace, name=name)
    assert ext.filter(pod, ["n"]).passed == ["n"]  # pinned to the reserved node either way
    error = ext.bind(namespace=namespace, name=name, uid="p", node="n")
    if takes_the_hold:
        assert error is None
        assert c.assumed(RESERVATION) is None
    else:  # the reservation keeps its room, and there is no other
        assert error == "node n no longer fits the pod: no free mig-3g.40gb: 0 of 1 free"
        assert c.assumed(RESERVATION) is not None
    assert c.snapshot().capacity(N).mig_free["nvidia.com/mig-3g.40gb"] == 0
