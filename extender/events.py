"""The ``NoGpuRoom`` Event: a pod that no node can take is told why, on the pod.

kube-scheduler reports the extender's filter in its own ``FailedScheduling`` Event, but with one
reason per node, which at a few hundred nodes says little; this Event says it in a line, grouped:
"0/12 nodes can take the pod: 8 no free mig-3g.40gb, 4 inventory stale".

A decorator of the extender service rather than a change inside it: the filter's answer (how many
nodes gave each kind of reason) is all it needs, read only when no node passed. The recorder queues
(it never waits for the API server) and aggregates repeats per pod (``inventory/notify/kube_events.py``).
Where there is no one to tell (:class:`NoEvents`) there is no decorator at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from extender.service import (
    ExplainedFilterReplies,
    ExtenderService,
    FilterOutcome,
    KnownNodeLists,
    Victims,
    reason_kinds,
)
from inventory.domain.events import NO_GPU_ROOM, EventRecorder, NoEvents, PodEvent, from_pod, no_room_summary

logger = logging.getLogger("kgm.extender")


class NoRoomEvents:
    """``service`` with a ``NoGpuRoom`` Event recorded whenever its filter passes no node."""

    def __init__(self, service: ExtenderService, events: EventRecorder) -> None:
        self._service = service
        self._events = events

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        outcome = self._service.filter(pod, node_names)
        if not outcome.passed and node_names:
            self._tell(pod, len(node_names), reason_kinds(outcome))
        return outcome

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        return self._service.prioritize(pod, node_names)

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        return self._service.bind(namespace=namespace, name=name, uid=uid, node=node)

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        return self._service.preempt(pod, victims)

    def _tell(self, pod: Mapping[str, Any], node_count: int, kinds: Mapping[str, int]) -> None:
        """``kinds``: how many nodes gave each kind of reason (``reason_kind``)."""
        try:
            ref = from_pod(pod)
            if ref is None or not kinds:  # an unreadable call is answered with Error, not a reason
                return
            message = no_room_summary(node_count, kinds)
            self._events.record(PodEvent(ref, NO_GPU_ROOM, message, action="Filter"))
        except Exception as error:  # telling the pod must never fail the filter that found out
            logger.warning(
                "no-room event not recorded", extra={"event": "events.record_failed", "error": repr(error)}
            )


class _EncodedNoRoomEvents(NoRoomEvents):
    """The same over a service that encodes its filter and prioritize replies itself (the HTTP layer
    calls ``filter_reply`` / ``prioritize_reply`` where a service has them) and counts the kinds of
    reason as it judges: the reply is never read back (re-parsing 5,000 nodes' reasons took 10 ms a
    call, 20 times the filter's own time; benchmarks/extender.py)."""

    _service: ExplainedFilterReplies  # type: ignore[assignment]

    def __init__(self, service: ExplainedFilterReplies, events: EventRecorder) -> None:
        super().__init__(service, events)  # type: ignore[arg-type]
        self._known = service.known_node_names if isinstance(service, KnownNodeLists) else None

    def filter_reply(self, call: Any) -> tuple[bytes, int]:
        body, passed, kinds = self._service.explained_filter_reply(call)
        if passed == 0 and call.node_names:
            self._tell(call.pod, len(call.node_names), kinds)
        return body, passed

    def prioritize_reply(self, call: Any) -> tuple[bytes, int]:
        return self._service.prioritize_reply(call)

    def known_node_names(self, tail: bytes) -> list[str] | None:
        return None if self._known is None else self._known(tail)


def with_no_room_events(service: ExtenderService, events: EventRecorder) -> ExtenderService:
    """``service`` decorated with the ``NoGpuRoom`` Event, keeping its encoded replies where it has them;
    ``service`` itself where the recorder tells no one."""
    if isinstance(events, NoEvents):
        return service
    if isinstance(service, ExplainedFilterReplies):
        return _EncodedNoRoomEvents(service, events)
    return NoRoomEvents(service, events)
