"""The ``NoGpuRoom`` Event: a pod that no node can take is told why, on the pod.

kube-scheduler reports the extender's filter in its own ``FailedScheduling`` Event, but with one
reason per node, which at a few hundred nodes says little; this Event says it in a line, grouped:
"0/12 nodes can take the pod: 8 no free mig-3g.40gb, 4 inventory stale".

A decorator of the extender service rather than a change inside it: the filter's answer (its reasons
per node) is all it needs, read only when no node passed. The recorder queues (it never waits for
the API server) and aggregates repeats per pod (``inventory/notify/kube_events.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from extender.service import ExtenderService, FilterOutcome, Victims
from inventory.domain.events import NO_GPU_ROOM, EventRecorder, PodEvent, from_pod, no_room_message

logger = logging.getLogger("kgm.extender")


class NoRoomEvents:
    """``service`` with a ``NoGpuRoom`` Event recorded whenever its filter passes no node."""

    def __init__(self, service: ExtenderService, events: EventRecorder) -> None:
        self._service = service
        self._events = events

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        outcome = self._service.filter(pod, node_names)
        if not outcome.passed and node_names:
            self._tell(pod, len(node_names), {**outcome.failed, **outcome.unresolvable})
        return outcome

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        return self._service.prioritize(pod, node_names)

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        return self._service.bind(namespace=namespace, name=name, uid=uid, node=node)

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        return self._service.preempt(pod, victims)

    def _tell(self, pod: Mapping[str, Any], node_count: int, reasons: Mapping[str, str]) -> None:
        try:
            ref = from_pod(pod)
            if ref is None or not reasons:  # an unreadable call is answered with Error, not a reason
                return
            message = no_room_message(node_count, reasons)
            self._events.record(PodEvent(ref, NO_GPU_ROOM, message, action="Filter"))
        except Exception as error:  # telling the pod must never fail the filter that found out
            logger.warning(
                "no-room event not recorded", extra={"event": "events.record_failed", "error": repr(error)}
            )


class _EncodedNoRoomEvents(NoRoomEvents):
    """The same over a service that encodes its filter and prioritize replies itself (the HTTP layer
    calls ``filter_reply`` / ``prioritize_reply`` where a service has them): the reasons are read
    back from the encoded reply, only when no node passed."""

    def filter_reply(self, call: Any) -> tuple[bytes, int]:
        body: bytes
        body, passed = self._service.filter_reply(call)  # type: ignore[attr-defined]
        if passed == 0 and call.node_names:
            self._tell(call.pod, len(call.node_names), _reasons(body))
        return body, passed

    def prioritize_reply(self, call: Any) -> tuple[bytes, int]:
        reply: tuple[bytes, int] = self._service.prioritize_reply(call)  # type: ignore[attr-defined]
        return reply


def with_no_room_events(service: ExtenderService, events: EventRecorder) -> ExtenderService:
    """``service`` decorated with the ``NoGpuRoom`` Event, keeping its encoded replies where it has them."""
    if hasattr(service, "filter_reply") and hasattr(service, "prioritize_reply"):
        return _EncodedNoRoomEvents(service, events)
    return NoRoomEvents(service, events)


def _reasons(body: bytes) -> dict[str, str]:
    """The reason per node of an encoded ExtenderFilterResult (both maps), empty if unreadable."""
    try:
        result = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    reasons: dict[str, str] = {}
    for key in ("FailedNodes", "FailedAndUnresolvableNodes"):
        found = result.get(key) if isinstance(result, dict) else None
        if isinstance(found, dict):
            reasons.update((str(node), str(reason)) for node, reason in found.items())
    return reasons
