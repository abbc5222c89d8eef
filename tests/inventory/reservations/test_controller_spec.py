"""GpuAllocation objects: parsing, the controller over a real Reserver, and end to end through the
official client against the Kubernetes emulator."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import yaml

from inventory.domain.allocation import MAX_DURATION_HOURS, Allocation, Status
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.model import NodeName
from inventory.domain.offer import offer_of
from inventory.domain.pods import WorkloadType
from inventory.domain.prices import PriceTable
from inventory.kube import GPUALLOCATIONS, GROUP, VERSION, KubeNotFoundError, KubeUnavailableError
from inventory.ledger.sql import SqlLedger
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from inventory.reservations.controller import (
    GpuAllocationController,
    Phase,
    gpuallocation_watch,
    request_of,
)
from inventory.reservations.reserver import Reserver
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.clusters import RESERVATION_CLUSTER
from tests.support.data import REPO
from tests.support.kube_emulator import GPUALLOCATIONS as GPUALLOCATIONS_PATH
from tests.support.kube_emulator import KubeEmulator, eventually

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
CRD = REPO / "manifests" / "crds" / "gpuallocation.yaml"
Key = tuple[str, str]


def ga(
    name: str = "train",
    *,
    namespace: str = "ml",
    uid: str = "uid-1",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GpuAllocation",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


# -- request_of ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            ga(),
            ReservationRequest(namespace="ml", pod_name="train", workload_type="Development"),
            id="defaults: the pod is the object's name, Development",
        ),
        pytest.param(
            {"metadata": {"name": "train", "namespace": "ml"}},
            ReservationRequest(namespace="ml", pod_name="train"),
            id="no spec at all",
        ),
        pytest.param(
            ga(
                workloadType="Inference",
                requiredMemoryGb=10,
                useMig=True,
                maxDurationHours=48,
                costLimit=12.5,
                podName="serve-0",
                teamId="ml-research",
                userId="alice",
            ),
            ReservationRequest(
                namespace="ml",
                pod_name="serve-0",
                workload_type="Inference",
                required_memory_gb=Decimal(10),
                use_mig=True,
                user_id="alice",
                team_id="ml-research",
                max_duration_hours=48,
                cost_limit=Decimal("12.5"),
            ),
            id="every field",
        ),
        pytest.param(
            ga(workloadType="training", requiredMemoryGb=0.5, useMig=False),
            ReservationRequest(
                namespace="ml",
                pod_name="train",
                workload_type="Training",
                required_memory_gb=Decimal("0.5"),
                use_mig=False,
            ),
            id="workload type in any case, a fraction of a GB",
        ),
        pytest.param(
            ga(maxDurationHours=24.0, costLimit=0, teamId="", userId=None),
            ReservationRequest(
                namespace="ml", pod_name="train", max_duration_hours=24, cost_limit=Decimal(0)
            ),
            id="24.0 hours is whole, a zero cost limit, empty ids are none",
        ),
        pytest.param(
            ga(maxDurationHours=1, podName="a.b-c"),
            ReservationRequest(namespace="ml", pod_name="a.b-c", max_duration_hours=1),
            id="bounds: one hour, a dotted pod name",
        ),
        pytest.param(
            ga(maxDurationHours=MAX_DURATION_HOURS),
            ReservationRequest(namespace="ml", pod_name="train", max_duration_hours=168),
            id="bounds: a week",
        ),
    ],
)
def test_request_of_parses_the_spec_and_applies_the_defaults(
    obj: dict[str, Any], expected: ReservationRequest
) -> None:
    assert request_of(obj) == expected


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (ga(workloadType="Batch"), "spec.workloadType must be one of Training, Inference, Development"),
        (ga(workloadType=3), "spec.workloadType"),
        (ga(requiredMemoryGb=0), "spec.requiredMemoryGb must be a number greater than 0"),
        (ga(requiredMemoryGb=-1), "spec.requiredMemoryGb must be a number greater than 0"),
        (ga(requiredMemoryGb="10"), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=True), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=float("nan")), "spec.requiredMemoryGb must be a number"),
        (ga(requiredMemoryGb=float("inf")), "spec.requiredMemoryGb must be a number"),
        (ga(useMig="yes"), "spec.useMig must be true or false"),
        (ga(maxDurationHours=0), "spec.maxDurationHours must be a whole number 1..168"),
        (ga(maxDurationHours=169), "spec.maxDurationHours must be a whole number 1..168"),
        (ga(maxDurationHours=1.5), "spec.maxDurationHours must be a whole number"),
        (ga(maxDurationHours=True), "spec.maxDurationHours must be a whole number"),
        (ga(maxDurationHours="24"), "spec.maxDurationHours must be a whole number"),
        (ga(costLimit=-0.01), "spec.costLimit must be a number at least 0"),
        (ga(costLimit="5"), "spec.costLimit must be a number at least 0"),
        (ga(podName="Train_1"), "spec.podName 'Train_1' is not a valid DNS subdomain name"),
        (ga(podName="a" * 254), "spec.podName"),
        (ga(podName=5), "spec.podName must be a string"),
        (ga(teamId="-ml"), "spec.teamId '-ml' is not a valid label value"),
        (ga(teamId="t" * 64), "spec.teamId"),
        (ga(userId=7), "spec.userId must be a string"),
        ({**ga(), "spec": "all of it"}, "spec must be an object"),
        ({"metadata": {"name": "train"}}, "metadata.namespace is missing"),
        ({"metadata": {"namespace": "ml"}}, "metadata.name is missing"),
        ({}, "metadata.namespace is missing"),
    ],
)
def test_request_of_names_the_bad_field(obj: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(says)}"):
        request_of(obj)


# -- The CRD and the code agree ---------------------------------------------------------------------


def crd_version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["plural"] == GPUALLOCATIONS
    assert crd["metadata"]["name"] == f"{GPUALLOCATIONS}.{GROUP}"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == VERSION
    return dict(version)


def test_the_crd_enums_and_bounds_are_the_codes() -> None:
    schema = crd_version()["schema"]["openAPIV3Schema"]["properties"]
    spec, status = schema["spec"]["properties"], schema["status"]["properties"]
    assert spec["workloadType"]["enum"] == [w.value for w in WorkloadType]
    assert spec["workloadType"]["default"] == WorkloadType.DEVELOPMENT.value
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert (spec["maxDurationHours"]["minimum"], spec["maxDurationHours"]["maximum"]) == (
        1,
        MAX_DURATION_HOURS,
    )


def test_the_crd_schema_is_structural_and_has_the_columns() -> None:
    version = crd_version()

    def untyped(schema: dict[str, Any], path: str) -> list[str]:
        missing = [] if "type" in schema else [path]
        for name, sub in schema.get("properties", {}).items():
            missing += untyped(sub, f"{path}.{name}")
        return missing

    assert untyped(version["schema"]["openAPIV3Schema"], "") == []
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Resource", "Node", "Age"]


# -- The controller over a real Reserver --------------------------------------------------------------


class Store:
    """In-memory statuses behind the controller's store interface; faults on demand."""

    def __init__(self) -> None:
        self.statuses: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[Key, dict[str, Any]]] = []
        self.gone: set[Key] = set()
        self.failures = 0

    def update_gpuallocation_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        key = (namespace, name)
        if self.failures:
            self.failures -= 1
            raise KubeUnavailableError("update gpuallocation status: 503", status=503)
        if key in self.gone:
            raise KubeNotFoundError("update gpuallocation status: 404", status=404)
        self.writes.append((key, status))
        self.statuses[key] = {**self.statuses.get(key, {}), **status}
        return {"status": self.statuses[key]}

    def written(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the API server would now hand it back, with the status written."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        return {**obj, "status": self.statuses[key]}


class Rig:
    def __init__(self, ledger: SqlLedger, *, leader: bool = True) -> None:
        cluster = parse_cluster(RESERVATION_CLUSTER)
        offer = offer_of(cluster)
        self.ledger = ledger
        self.cache: InventoryCache = cache_of(cluster)
        self.reserver = Reserver(
            cache=self.cache, ledger=ledger, prices=PriceTable(), offer=lambda: offer, clock=lambda: NOW
        )
        self.store = Store()
        self.leader = leader
        self.controller = self.restarted()

    def restarted(self) -> GpuAllocationController:
        return GpuAllocationController(
            reservations=self.reserver, store=self.store, clock=lambda: NOW, is_leader=lambda: self.leader
        )

    def mig_free(self, node: str, profile: str) -> int:
        return self.cache.snapshot().capacity(NodeName(node)).mig_free[f"nvidia.com/mig-{profile}"]


@pytest.fixture
def ledger() -> Iterator[SqlLedger]:
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        yield ledger


@pytest.fixture
def rig(ledger: SqlLedger) -> Rig:
    return Rig(ledger)


def test_a_new_object_is_allocated_with_every_status_field(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    obj = ga(workloadType="Inference", requiredMemoryGb=10, teamId="vision", podName="serve-0")
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("ADDED", obj)
    [(key, status)] = rig.store.writes
    assert key == ("ml", "train")
    assert status == {
        "phase": "Allocated",
        "allocatedResource": "nvidia.com/mig-1g.10gb",
        "nodeName": "small",
        "allocationId": status["allocationId"],
        "costPerHour": float((Decimal("3.90") / 7).quantize(Decimal("0.000001"))),
        "allocationTime": "2026-11-27T08:00:00Z",
        "message": "",
    }
    held = rig.ledger.get(status["allocationId"])
    assert held is not None
    assert (held.status, held.namespace, held.pod, held.team, held.node) == (
        Status.RESERVED,
        "ml",
        "serve-0",
        "vision",
        "small",
    )
    assert rig.mig_free("small", "1g.10gb") == 1
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "gpuallocation.allocated"]
    assert (record.namespace, record.gpuallocation, record.allocation) == ("ml", "train", held.id)  # type: ignore[attr-defined]


def test_pending_without_an_allocation_id_is_allocated_too(rig: Rig) -> None:
    rig.controller.on_event("ADDED", ga(status={"phase": "Pending"}))
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"useMig": True, "requiredMemoryGb": 50}, "no MIG instance offered has 50 GB"),
        ({"requiredMemoryGb": 200}, "requiredMemoryGb 200 is more than any GPU here (80 GB)"),
        ({"maxDurationHours": 500}, "invalid spec: spec.maxDurationHours must be a whole number 1..168"),
        ({"workloadType": "Batch"}, "invalid spec: spec.workloadType must be one of"),
    ],
)
def test_what_cannot_be_met_fails_with_the_reason(
    rig: Rig, caplog: pytest.LogCaptureFixture, spec: dict[str, Any], says: str
) -> None:
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("ADDED", ga(**spec))
    [(_, status)] = rig.store.writes
    assert status["phase"] == "Failed"
    assert status["message"].startswith(says)
    assert set(status) == {"phase", "message"}
    assert rig.ledger.open_allocations() == []
    assert [getattr(r, "event", None) for r in caplog.records] == ["gpuallocation.failed"]


def test_when_the_cluster_is_full_the_next_one_fails_and_says_what_is_missing(rig: Rig) -> None:
    objects = [ga(f"ga-{i}", uid=f"uid-{i}", requiredMemoryGb=30) for i in range(4)]
    for obj in objects:
        rig.controller.on_event("ADDED", obj)
    phases = [rig.store.statuses[("ml", f"ga-{i}")]["phase"] for i in range(4)]
    assert phases == ["Allocated", "Allocated", "Allocated", "Failed"]  # three 3g.40gb in the cluster
    assert rig.store.statuses[("ml", "ga-3")]["message"] == "no node has a free mig-3g.40gb now"


def test_replays_relists_and_restarts_never_reserve_twice(rig: Rig) -> None:
    obj = ga(useMig=True)
    rig.controller.on_event("ADDED", obj)
    # The same event again, a relist from before the status came back, then the status coming back.
    rig.controller.on_event("ADDED", obj)
    rig.controller.replace([obj], "5")
    rig.controller.resync()
    written = rig.store.written(obj)
    rig.controller.on_event("MODIFIED", written)
    rig.controller.replace([written], "7")
    # A restarted controller (or a new leader) sees the status and leaves it alone.
    restarted = rig.restarted()
    restarted.replace([written], "8")
    restarted.on_event("MODIFIED", written)
    restarted.resync()
    assert len(rig.store.writes) == 1
    assert len(rig.ledger.open_allocations()) == 1


def test_failed_objects_are_not_tried_again(rig: Rig) -> None:
    obj = ga(useMig=True, requiredMemoryGb=50)
    rig.controller.on_event("ADDED", obj)
    rig.controller.on_event("MODIFIED", rig.store.written(obj))
    rig.controller.resync()
    rig.restarted().replace([rig.store.written(obj)], "3")
    assert len(rig.store.writes) == 1


def test_deleting_the_object_releases_the_reservation(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    allocation_id = rig.store.statuses[("ml", "train")]["allocationId"]
    assert rig.mig_free("small", "3g.40gb") == 0
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("DELETED", rig.store.written(obj))
    assert rig.mig_free("small", "3g.40gb") == 1
    released = rig.ledger.get(allocation_id)
    assert released is not None and released.status is Status.RELEASED
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "gpuallocation.released"]
    assert record.allocation == allocation_id  # type: ignore[attr-defined]
    rig.controller.on_event("DELETED", rig.store.written(obj))  # again: no such open allocation, fine


def test_a_delete_seen_before_the_status_came_back_still_releases(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    rig.controller.on_event("DELETED", obj)  # the object as last seen, without the status
    assert rig.mig_free("small", "3g.40gb") == 1
    assert rig.ledger.open_allocations() == []


def test_a_restarted_controller_releases_what_an_earlier_one_reserved(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.controller.on_event("ADDED", obj)
    restarted = rig.restarted()
    restarted.replace([rig.store.written(obj)], "3")
    restarted.on_event("DELETED", rig.store.written(obj))
    assert rig.ledger.open_allocations() == []


def test_a_relist_releases_objects_deleted_while_the_watch_was_down(rig: Rig) -> None:
    kept, deleted = ga("kept", uid="uid-k", useMig=True), ga("gone", uid="uid-g", useMig=True)
    rig.controller.replace([kept, deleted], "3")
    assert len(rig.ledger.open_allocations()) == 2
    rig.controller.replace([rig.store.written(kept)], "9")
    [still] = rig.ledger.open_allocations()
    assert still.id == rig.store.statuses[("ml", "kept")]["allocationId"]


def test_an_object_recreated_under_the_same_name_gets_a_new_reservation(rig: Rig) -> None:
    first = ga(uid="uid-1", useMig=True)
    rig.controller.on_event("ADDED", first)
    old_id = rig.store.statuses[("ml", "train")]["allocationId"]
    rig.store.statuses.clear()
    rig.controller.replace([ga(uid="uid-2", useMig=True)], "9")  # the DELETED event was missed
    [open_one] = rig.ledger.open_allocations()
    assert open_one.id != old_id
    assert rig.store.statuses[("ml", "train")]["allocationId"] == open_one.id


def test_a_claimed_reservation_stays_with_its_pod(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    obj = ga(useMig=True)
    rig.controller.on_event("ADDED", obj)
    allocation_id = rig.store.statuses[("ml", "train")]["allocationId"]
    assert rig.ledger.claim(allocation_id, pod_uid="pod-uid", pod="train", start=NOW)
    with caplog.at_level(logging.INFO, logger="kgm.gpuallocation"):
        rig.controller.on_event("DELETED", rig.store.written(obj))
    held = rig.ledger.get(allocation_id)
    assert held is not None and held.status is Status.ACTIVE
    assert [getattr(r, "event", None) for r in caplog.records] == ["gpuallocation.claimed"]


def test_a_follower_writes_nothing_and_takes_over_when_it_leads(ledger: SqlLedger) -> None:
    rig = Rig(ledger, leader=False)
    obj = ga(useMig=True)
    rig.controller.replace([obj], "1")
    rig.controller.on_event("MODIFIED", obj)
    rig.controller.resync()
    assert rig.store.writes == []
    assert ledger.open_allocations() == []
    rig.leader = True  # the old leader went away before deciding
    rig.controller.resync()
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"
    rig.leader = False
    rig.controller.on_event("DELETED", rig.store.written(obj))
    assert len(ledger.open_allocations()) == 1  # releasing is the leader's job too


def test_a_failed_status_write_holds_nothing_and_is_tried_again(rig: Rig) -> None:
    obj = ga(requiredMemoryGb=30)
    rig.store.failures = 1
    rig.controller.on_event("ADDED", obj)
    assert rig.store.writes == []
    assert rig.ledger.open_allocations() == []
    assert rig.mig_free("small", "3g.40gb") == 1
    rig.controller.resync()
    assert rig.store.statuses[("ml", "train")]["phase"] == "Allocated"
    assert len(rig.ledger.open_allocations()) == 1


def test_an_object_deleted_before_its_status_was_written_holds_nothing(rig: Rig) -> None:
    rig.store.gone.add(("ml", "train"))
    rig.controller.on_event("ADDED", ga(requiredMemoryGb=30))
    assert rig.ledger.open_allocations() == []
    assert rig.mig_free("small", "3g.40gb") == 1


class UnavailableLedger:
    def reserve(self, request: ReservationRequest) -> Allocation:
        raise ReservationRefusedError("the ledger is unavailable: gone", status=503)

    def release(self, allocation_id: str) -> Allocation | None:
        raise AssertionError("nothing to release")


def test_an_unavailable_ledger_postpones_the_decision() -> None:
    store = Store()
    controller = GpuAllocationController(reservations=UnavailableLedger(), store=store, clock=lambda: NOW)
    controller.on_event("ADDED", ga())
    controller.resync()
    assert store.writes == []


# -- End to end: the emulator, the official client, the reflector ------------------------------------


@pytest.fixture
def live(kube_emulator: KubeEmulator, rig: Rig) -> Iterator[Rig]:
    stop = threading.Event()
    client = kube_emulator.new_client()
    controller = GpuAllocationController(reservations=rig.reserver, store=client, clock=lambda: NOW)
    watch = gpuallocation_watch(client, controller, watch_timeout_seconds=1, resync_interval_s=0.2)
    loops = {"reflector-gpuallocations": watch.reflector.run, "gpuallocation-resync": watch.resync}
    for name, loop in loops.items():
        threading.Thread(target=loop, args=(stop,), name=name, daemon=True).start()
    assert watch.reflector.has_synced.wait(5)
    yield rig
    stop.set()
    for thread in threading.enumerate():
        if thread.name in ("reflector-gpuallocations", "gpuallocation-resync"):
            thread.join(timeout=5)
            assert not thread.is_alive()


def test_a_gpuallocation_is_allocated_and_released_through_the_api_server(
    kube_emulator: KubeEmulator, live: Rig
) -> None:
    body = ga("infer-1", workloadType="Inference", requiredMemoryGb=10)
    del body["metadata"]["uid"]  # the API server gives one
    kube_emulator.create(GPUALLOCATIONS_PATH, body)

    def allocated() -> dict[str, Any]:
        stored = kube_emulator.stored(GPUALLOCATIONS_PATH, "infer-1", namespace="ml")
        status: dict[str, Any] = dict((stored or {}).get("status") or {})
        return status if status.get("phase") == "Allocated" else {}

    status = eventually(allocated)
    assert status["allocatedResource"] == "nvidia.com/mig-1g.10gb"
    assert status["nodeName"] == "small"
    assert status["allocationTime"] == "2026-11-27T08:00:00Z"
    held = live.ledger.get(status["allocationId"])
    assert held is not None and held.status is Status.RESERVED and held.pod == "infer-1"
    assert live.mig_free("small", "1g.10gb") == 1

    def released() -> bool:
        row = live.ledger.get(status["allocationId"])
        return row is not None and row.status is Status.RELEASED

    kube_emulator.delete(GPUALLOCATIONS_PATH, "infer-1", namespace="ml")
    eventually(released)
    assert live.mig_free("small", "1g.10gb") == 2
    assert len(live.ledger.open_allocations()) == 0
