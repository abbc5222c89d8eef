"""The Event recorder against the Kubernetes emulator: core/v1 Events on pods, aggregated per (pod,
reason), bounded, never blocking or failing the caller."""

from __future__ import annotations

import itertools
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inventory.domain.events import PodEvent, PodRef
from inventory.notify.kube_events import EventSettings, KubeEventRecorder
from tests.support.kube_emulator import PODS, KubeEmulator, eventually

EVENTS = "v1/events"
T0 = datetime(2026, 12, 6, 5, 10, tzinfo=UTC)  # a whole second: the MicroTime corner case
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|\+00:00)")


class Clocks:
    """The wall clock (timestamps) and the monotonic one (the repeat interval), moved by the test."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds


def no_room(
    pod: str = "train-0", message: str = "0/3 nodes can take the pod: 3 no free mig-3g.40gb"
) -> PodEvent:
    return PodEvent(PodRef("ml", pod, f"uid-{pod}"), "NoGpuRoom", message, action="Filter")


def recorder(kube: KubeEmulator, clocks: Clocks, **settings: Any) -> KubeEventRecorder:
    names = (f"{n:016x}" for n in itertools.count(1))
    return KubeEventRecorder(
        kube.client,
        instance="kgm-5c7d9-x2x4q",
        settings=EventSettings(**settings),
        clock=clocks.wall,
        monotonic=clocks.monotonic,
        suffix=lambda: next(names),
    )


def sent(kube: KubeEmulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.requests(resource=EVENTS) if not r.from_harness]


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def test_the_first_occurrence_creates_a_core_v1_event_on_the_pod(
    kube_emulator: KubeEmulator, clocks: Clocks
) -> None:
    events = recorder(kube_emulator, clocks)
    events.record(no_room())
    events.flush()
    stored = kube_emulator.stored(EVENTS, "train-0.0000000000000001", namespace="ml")
    assert stored is not None
    assert stored["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ml",
        "name": "train-0",
        "uid": "uid-train-0",
    }
    assert (stored["reason"], stored["type"], stored["action"], stored["count"]) == (
        "NoGpuRoom",
        "Warning",
        "Filter",
        1,
    )
    assert stored["message"] == "0/3 nodes can take the pod: 3 no free mig-3g.40gb"
    assert stored["reportingComponent"] == "gpu.kgm.io/kgm"  # events.k8s.io's reportingController
    assert stored["reportingInstance"] == "kgm-5c7d9-x2x4q"
    assert stored["source"] == {"component": "gpu.kgm.io/kgm"}
    # kube-apiserver reads eventTime with six fractional digits only (metav1.RFC3339Micro)
    assert MICRO_TIME.fullmatch(stored["eventTime"]), stored["eventTime"]
    assert RFC3339.fullmatch(stored["firstTimestamp"]) and RFC3339.fullmatch(stored["lastTimestamp"])
    assert sent(kube_emulator) == ["POST /api/v1/namespaces/ml/events"]


def test_repeats_are_counted_and_patched_at_most_once_per_interval(
    kube_emulator: KubeEmulator, clocks: Clocks
) -> None:
    events = recorder(kube_emulator, clocks, repeat_interval_s=30)
    for second in (0, 5, 10, 20):
        clocks.seconds = second
        events.record(no_room())
    events.flush()
    assert sent(kube_emulator) == ["POST /api/v1/namespaces/ml/events"]  # three repeats counted, not sent
    clocks.seconds = 31
    events.record(no_room(message="0/4 nodes can take the pod: 4 no free mig-3g.40gb"))
    events.flush()
    stored = kube_emulator.stored(EVENTS, "train-0.0000000000000001", namespace="ml")
    assert stored is not None
    assert stored["count"] == 5
    assert stored["lastTimestamp"] == "2026-12-06T05:10:31Z"
    assert stored["firstTimestamp"] in ("2026-12-06T05:10:00Z", "2026-12-06T05:10:00+00:00")
    assert stored["message"] == "0/4 nodes can take the pod: 4 no free mig-3g.40gb"
    assert sent(kube_emulator) == [
        "POST /api/v1/namespaces/ml/events",
        "PATCH /api/v1/namespaces/ml/events/train-0.0000000000000001",
    ]


def test_each_pod_and_reason_is_its_own_event(kube_emulator: KubeEmulator, clocks: Clocks) -> None:
    events = recorder(kube_emulator, clocks)
    events.record(no_room("a"))
    events.record(no_room("b"))
    events.record(
        PodEvent(PodRef("ml", "a", "uid-a"), "OverCostLimit", "cost 12.00 past costLimit 10", "Reconcile")
    )
    events.flush()
    assert len(sent(kube_emulator)) == 3


def test_an_event_the_server_dropped_is_created_again_with_the_count(
    kube_emulator: KubeEmulator, clocks: Clocks
) -> None:
    events = recorder(kube_emulator, clocks, repeat_interval_s=0)
    events.record(no_room())
    events.flush()
    kube_emulator.delete(EVENTS, "train-0.0000000000000001", namespace="ml")  # the server's 1 h TTL
    clocks.seconds = 3600
    events.record(no_room())
    events.flush()
    stored = kube_emulator.stored(EVENTS, "train-0.0000000000000001", namespace="ml")
    assert stored is not None and stored["count"] == 2


def test_an_unavailable_api_server_is_logged_never_raised(
    kube_emulator: KubeEmulator, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    events = recorder(kube_emulator, clocks, timeout_s=1)
    with kube_emulator.unavailable(), caplog.at_level(logging.WARNING, logger="kgm.events"):
        events.record(no_room())
        events.flush()
    assert events.failed == 1
    assert [r.__dict__.get("event") for r in caplog.records] == ["events.record_failed"]


def test_a_full_queue_drops_new_events_without_waiting(
    kube_emulator: KubeEmulator, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    events = recorder(kube_emulator, clocks, queue_size=2)
    with caplog.at_level(logging.WARNING, logger="kgm.events"):
        for i in range(5):  # nothing sends meanwhile: the thread is not started
            events.record(no_room(f"p{i}"))
    assert events.dropped == 3
    assert [r.__dict__.get("event") for r in caplog.records] == ["events.dropped"]  # once, not per event
    events.flush()
    assert len(sent(kube_emulator)) == 2


def test_the_pairs_remembered_are_bounded(kube_emulator: KubeEmulator, clocks: Clocks) -> None:
    events = recorder(kube_emulator, clocks, remembered=2, repeat_interval_s=0)
    for pod in ("a", "b", "c", "a"):  # a is forgotten when c comes: its repeat is a new Event
        events.record(no_room(pod))
    events.flush()
    assert [line.split()[0] for line in sent(kube_emulator)] == ["POST"] * 4


def test_a_sink_that_fails_in_any_way_never_reaches_the_caller(clocks: Clocks) -> None:
    class Broken:
        def create_event(
            self, namespace: str, body: dict[str, Any], *, timeout_s: float | None = None
        ) -> Any:
            raise RuntimeError("boom")

        def patch_event(
            self, namespace: str, name: str, patch: dict[str, Any], *, timeout_s: float | None = None
        ) -> Any:
            raise RuntimeError("boom")

    events = KubeEventRecorder(Broken(), instance="i", clock=clocks.wall, monotonic=clocks.monotonic)
    events.record(no_room())
    events.flush()
    assert events.failed == 1


def test_the_sending_thread_sends_what_is_recorded(kube_emulator: KubeEmulator, clocks: Clocks) -> None:
    events = recorder(kube_emulator, clocks)
    events.start()
    try:
        events.record(no_room())
        eventually(lambda: kube_emulator.stored(EVENTS, "train-0.0000000000000001", namespace="ml"))
    finally:
        events.close()


def test_the_pod_the_event_is_about_exists_and_matches(kube_emulator: KubeEmulator, clocks: Clocks) -> None:
    pod = kube_emulator.create(
        PODS, {"metadata": {"name": "train-0", "namespace": "ml"}, "spec": {"containers": []}}
    )
    uid = pod["metadata"]["uid"]
    events = recorder(kube_emulator, clocks)
    events.record(PodEvent(PodRef("ml", "train-0", uid), "NoGpuRoom", "0/1 nodes can take the pod", "Filter"))
    events.flush()
    stored = kube_emulator.stored(EVENTS, "train-0.0000000000000001", namespace="ml")
    assert stored is not None and stored["involvedObject"]["uid"] == uid
    assert stored["metadata"]["namespace"] == pod["metadata"]["namespace"]  # legacy validation's rule
