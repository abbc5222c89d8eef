"""Kubernetes Events on a pod, for what its owner must know: pure parts (what to say, and the wire body).

``kubectl describe pod`` and ``kubectl events`` show them. Three things are told (each a ``Warning``):

- :data:`NO_GPU_ROOM`: the extender's filter found no node for the pod, and why, summarised per reason
  ("0/12 nodes can take the pod: 8 no free mig-3g.40gb, 4 inventory stale");
- :data:`OVER_COST_LIMIT` / :data:`OVER_MAX_DURATION`: a pod running on a reservation went past its
  ``costLimit`` or ``maxDurationHours``;
- :data:`RESERVATION_LAPSED`: the reservation a pod claims (or was made for) expired unclaimed.

The wire format is core/v1 ``Event`` as client-go's legacy recorder writes it (count, firstTimestamp,
lastTimestamp) with the fields of the newer API filled in too (eventTime, action, reportingComponent,
reportingInstance), which kube-apiserver's validation then requires (``ValidateEventCreate``,
``legacyValidateEvent``: reason and action at most 128 characters, the note 1,024).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

#: ``reportingComponent`` (events.k8s.io's ``reportingController``): a qualified name, as validation asks.
REPORTING_CONTROLLER: Final = "gpu.kgm.io/kgm"
WARNING: Final = "Warning"
NORMAL: Final = "Normal"

NO_GPU_ROOM: Final = "NoGpuRoom"
OVER_COST_LIMIT: Final = "OverCostLimit"
OVER_MAX_DURATION: Final = "OverMaxDuration"
RESERVATION_LAPSED: Final = "ReservationLapsed"

#: kube-apiserver's limits on an Event (pkg/apis/core/validation/events.go).
REASON_LIMIT: Final = 128
ACTION_LIMIT: Final = 128
NOTE_LIMIT: Final = 1024
REPORTING_INSTANCE_LIMIT: Final = 128
NAME_LIMIT: Final = 253

#: Kinds of reason a summary names one by one; the rest are counted together.
_SHOWN_REASONS = 4


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod an Event is about (``involvedObject``)."""

    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True, slots=True)
class PodEvent:
    """One thing to tell a pod's owner."""

    pod: PodRef
    reason: str
    message: str
    #: What kgm was doing (events.k8s.io ``action``): ``Filter``, ``Reconcile``, ``Expire``.
    action: str
    type: str = WARNING


class EventRecorder(Protocol):
    """Where Events go. ``record`` never blocks the caller for I/O and never raises: telling a user is
    worth less than answering the request that found out (the real one queues and sends from a thread
    of its own; ``inventory/notify/kube_events.py``)."""

    def record(self, event: PodEvent) -> None: ...


class NoEvents:
    """The recorder where there is no cluster to tell (standalone ``kgm serve --inventory``)."""

    def record(self, event: PodEvent) -> None:
        return None


@dataclass
class RecordedEvents:
    """An in-memory recorder for tests and the simulator: every event, in order."""

    events: list[PodEvent] = field(default_factory=list)

    def record(self, event: PodEvent) -> None:
        self.events.append(event)

    def reasons(self) -> list[str]:
        return [event.reason for event in self.events]


def from_pod(pod: Mapping[str, Any]) -> PodRef | None:
    """The reference to a pod object (a decoded wire pod), None without a namespace and name."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
        return None
    return PodRef(namespace, name, uid if isinstance(uid, str) else "")


def no_room_message(node_count: int, reasons: Mapping[str, str]) -> str:
    """kube-scheduler's style of summary over the nodes the filter judged and the reason for each:
    ``0/12 nodes can take the pod: 8 no free mig-3g.40gb, 4 inventory stale``. Reasons are grouped by
    their first clause (up to ":", ";", "," or "("), without node names and durations."""
    return no_room_summary(node_count, Counter(reason_kind(node, reason) for node, reason in reasons.items()))


def no_room_summary(node_count: int, kinds: Mapping[str, int]) -> str:
    """:func:`no_room_message` from how many nodes gave each kind of reason (:func:`reason_kind`), for
    a caller that counts them as it judges (the extender's memo) rather than keeping every reason."""
    ordered = sorted(
        ((kind, count) for kind, count in kinds.items() if count > 0), key=lambda item: (-item[1], item[0])
    )
    parts = [f"{count} {kind}" for kind, count in ordered[:_SHOWN_REASONS]]
    rest = sum(count for _, count in ordered[_SHOWN_REASONS:])
    if rest:
        parts.append(f"{rest} for other reasons")
    return truncate(f"0/{node_count} nodes can take the pod: {', '.join(parts)}", NOTE_LIMIT)


_DURATION = re.compile(r" for \d+(\.\d+)? ?s\b")


def reason_kind(node: str, reason: str) -> str:
    """The kind of reason ``node`` gave: its first clause, without the node's name and durations.
    It depends on ``node`` only where ``node`` occurs in ``reason`` (``node=""``: a reason naming none)."""
    first = re.split(r"[:;,(]", reason, maxsplit=1)[0].strip()
    if node:
        first = first.replace(f" for node {node}", "").replace(node, "the node")
    return _DURATION.sub("", first) or "no room"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wire_time(moment: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wire_micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 in UTC with microseconds, always six digits (``RFC3339Micro``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(pod: PodRef, suffix: str) -> str:
    """``<pod>.<suffix>`` as client-go names Events, the pod's part shortened to keep a DNS subdomain."""
    return f"{pod.name[: NAME_LIMIT - len(suffix) - 1]}.{suffix}"


def event_body(
    event: PodEvent, *, name: str, instance: str, first: datetime, last: datetime, count: int
) -> dict[str, Any]:
    """The core/v1 Event object to create for ``event`` (``first``: its first occurrence)."""
    involved: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": event.pod.namespace,
        "name": event.pod.name,
    }
    if event.pod.uid:
        involved["uid"] = event.pod.uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": event.pod.namespace},
        "involvedObject": involved,
        "reason": truncate(event.reason, REASON_LIMIT),
        "message": truncate(event.message, NOTE_LIMIT),
        "type": event.type,
        "action": truncate(event.action, ACTION_LIMIT),
        "source": {"component": REPORTING_CONTROLLER},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance[:REPORTING_INSTANCE_LIMIT],
        "eventTime": wire_micro_time(first),
        "firstTimestamp": wire_time(first),
        "lastTimestamp": wire_time(last),
        "count": count,
    }


def repeat_patch(event: PodEvent, *, last: datetime, count: int) -> dict[str, Any]:
    """The merge patch that records ``count`` occurrences so far, the last at ``last`` (client-go's
    legacy recorder patches count, lastTimestamp and message the same way)."""
    return {
        "count": count,
        "lastTimestamp": wire_time(last),
        "message": truncate(event.message, NOTE_LIMIT),
    }
