"""What an Event on a pod says, and its core/v1 wire body (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from inventory.domain.events import (
    NAME_LIMIT,
    NOTE_LIMIT,
    PodEvent,
    PodRef,
    event_body,
    event_name,
    from_pod,
    no_room_message,
    repeat_patch,
    wire_micro_time,
    wire_time,
)

T0 = datetime(2026, 12, 6, 5, 10, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        pytest.param(
            {
                **{f"h{i}": f"no free mig-3g.40gb: 0 of {i % 3 + 1} free" for i in range(8)},
                **{f"s{i}": f"inventory stale for {90 + i} s (limit 90 s)" for i in range(4)},
            },
            "0/12 nodes can take the pod: 8 no free mig-3g.40gb, 4 inventory stale",
            id="grouped by kind, counts and durations of each node left out",
        ),
        pytest.param(
            {
                "n1": "no GPU inventory for node n1: is kgm-agent running there?",
                "n2": "no GPU inventory for node n2: is kgm-agent running there?",
            },
            "0/2 nodes can take the pod: 2 no GPU inventory",
            id="the node's name left out",
        ),
        pytest.param(
            {
                "a": "2 whole GPUs requested, node has 1; GPU-3f12ab34… unhealthy: XID 79",
                "b": "node has A100-80GB; the pod asks for nvidia.com/gpu.product nvidia-h100",
            },
            "0/2 nodes can take the pod: 1 2 whole GPUs requested, 1 node has A100-80GB",
            id="unhealthy notes and details left out",
        ),
        pytest.param(
            {f"n{i}": f"kind {i}: x" for i in range(6)},
            "0/6 nodes can take the pod: 1 kind 0, 1 kind 1, 1 kind 2, 1 kind 3, 2 for other reasons",
            id="four kinds named, the rest counted",
        ),
    ],
)
def test_the_no_room_message_summarises_the_reasons_per_kind(reasons: dict[str, str], expected: str) -> None:
    assert no_room_message(len(reasons), reasons) == expected


def test_the_no_room_message_stays_within_the_api_servers_note_limit() -> None:
    reasons = {f"n{i}": f"{'x' * 400} {i}" for i in range(50)}
    assert len(no_room_message(50, reasons)) <= NOTE_LIMIT


def test_the_event_body_is_a_core_v1_event_about_the_pod() -> None:
    event = PodEvent(PodRef("ml", "train-0", "uid-1"), "NoGpuRoom", "0/1 nodes can take the pod", "Filter")
    later = datetime(2026, 12, 6, 5, 12, 30, tzinfo=UTC)
    assert event_body(event, name="train-0.abc", instance="kgm-7d9f", first=T0, last=later, count=3) == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "train-0.abc", "namespace": "ml"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "ml",
            "name": "train-0",
            "uid": "uid-1",
        },
        "reason": "NoGpuRoom",
        "message": "0/1 nodes can take the pod",
        "type": "Warning",
        "action": "Filter",
        "source": {"component": "gpu.kgm.io/kgm"},
        "reportingComponent": "gpu.kgm.io/kgm",
        "reportingInstance": "kgm-7d9f",
        "eventTime": "2026-12-06T05:10:00.123456Z",
        "firstTimestamp": "2026-12-06T05:10:00Z",
        "lastTimestamp": "2026-12-06T05:12:30Z",
        "count": 3,
    }


def test_the_body_keeps_to_the_api_servers_limits() -> None:
    event = PodEvent(PodRef("ml", "p" * 253), "R" * 300, "m" * 5000, "A" * 300)
    body = event_body(
        event, name=event_name(event.pod, "0123456789abcdef"), instance="i" * 300, first=T0, last=T0, count=1
    )
    assert len(body["reason"]) <= 128 and len(body["action"]) <= 128
    assert len(body["message"]) <= 1024 and len(body["reportingInstance"]) <= 128
    assert len(body["metadata"]["name"]) <= NAME_LIMIT
    assert body["metadata"]["name"].endswith(".0123456789abcdef")
    assert "uid" not in body["involvedObject"]  # unknown: left out, not empty


@pytest.mark.parametrize(
    ("moment", "time", "micro"),
    [
        (T0, "2026-12-06T05:10:00Z", "2026-12-06T05:10:00.123456Z"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
    ],
)
def test_times_are_written_as_metav1_time_and_micro_time(moment: datetime, time: str, micro: str) -> None:
    assert wire_time(moment) == time
    assert wire_micro_time(moment) == micro
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wire_micro_time(moment))


def test_a_repeat_patches_count_last_timestamp_and_message() -> None:
    event = PodEvent(PodRef("ml", "p"), "NoGpuRoom", "now 0/3", "Filter")
    assert repeat_patch(event, last=T0, count=4) == {
        "count": 4,
        "lastTimestamp": "2026-12-06T05:10:00Z",
        "message": "now 0/3",
    }


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"metadata": {"namespace": "ml", "name": "p", "uid": "u"}}, PodRef("ml", "p", "u")),
        ({"metadata": {"namespace": "ml", "name": "p"}}, PodRef("ml", "p", "")),
        ({"metadata": {"namespace": "ml", "generateName": "p-"}}, None),
        ({"metadata": "x"}, None),
        ({}, None),
    ],
)
def test_a_pod_reference_needs_a_namespace_and_a_name(
    pod: dict[str, object], expected: PodRef | None
) -> None:
    assert from_pod(pod) == expected
