"""The handlers of ``POST /extender/{filter,prioritize,bind,preempt}``: parse, call the service, serialize.

The HTTP edge (method, bounded read, metrics, log line, catch-all) is ``kgm.web``'s ``JsonEndpoint``;
a :class:`VerbHandler` says what to answer, the ``kgm_extender_requests`` labels (verb, outcome) and the
log lines. kube-scheduler treats any status but 200 as a failed call, so extender-protocol errors go in
the reply's ``Error`` with a 200 and it reports them on the pod; only bodies that are not JSON objects
at all get a 400.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from starlette.types import Scope

from extender import wire
from extender.service import EncodedReplies, ExtenderService, KnownNodeLists
from inventory.domain.pods import PodError

LogLine = tuple[str, tuple[object, ...], Mapping[str, object]]


class _Call(Protocol):
    @property
    def pod_ref(self) -> str: ...


Call = TypeVar("Call", bound=_Call)


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    outcome: str  # ok, or refused (the service said no: a failed bind)
    log: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verb(Generic[Call]):
    """One verb: how to parse its call, answer it through the service, and write its errors."""

    name: str
    parse: Callable[[bytes], Call]
    answer: Callable[[ExtenderService, Call], Reply]
    #: The verb's reply carrying only ``Error``; None where the reply has no Error field (prioritize).
    error: Callable[[str], bytes] | None
    #: Run the service in a worker thread: it waits on the API server (bind), the loop must not.
    blocking: bool = False
    #: Makes a parser of its own for each handler over the service, where parsing keeps state
    #: (``wire.ExtenderArgsReader``).
    reader: Callable[[ExtenderService], Callable[[bytes], Call]] | None = None


def _filter(service: ExtenderService, call: wire.ExtenderCall) -> Reply:
    if isinstance(service, EncodedReplies):
        body, passed = service.filter_reply(call)
        return Reply(body, "ok", {"nodes": len(call.node_names), "passed": passed})
    outcome = service.filter(call.pod, call.node_names)
    log = {"nodes": len(call.node_names), "passed": len(outcome.passed)}
    return Reply(wire.filter_result(call, outcome), "ok", log)


def _prioritize(service: ExtenderService, call: wire.ExtenderCall) -> Reply:
    if isinstance(service, EncodedReplies):
        body, scored = service.prioritize_reply(call)
        return Reply(body, "ok", {"nodes": len(call.node_names), "scored": scored})
    scores = service.prioritize(call.pod, call.node_names)
    return Reply(wire.prioritize_result(scores), "ok", {"nodes": len(call.node_names), "scored": len(scores)})


def _filter_reader(service: ExtenderService) -> wire.ExtenderArgsReader:
    return wire.ExtenderArgsReader()


def _prioritize_reader(service: ExtenderService) -> wire.ExtenderArgsReader:
    """Names the nodes the service's filter just passed without parsing them: kube-scheduler sends
    prioritize exactly those (5,000 names parsed and set up afresh cost 2 ms a call there;
    benchmarks/extender.py)."""
    return wire.ExtenderArgsReader(
        known=service.known_node_names if isinstance(service, KnownNodeLists) else None
    )


def _bind(service: ExtenderService, call: wire.BindingCall) -> Reply:
    error = service.bind(namespace=call.namespace, name=call.name, uid=call.uid, node=call.node)
    log = {"node": call.node, "uid": call.uid, **({"error": error} if error else {})}
    return Reply(wire.binding_result(error), "refused" if error else "ok", log)


def _preempt(service: ExtenderService, call: wire.PreemptionCall) -> Reply:
    victims = service.preempt(call.pod, call.victims)
    log = {"candidates": len(call.victims), "kept": sorted(victims)}
    return Reply(wire.preemption_result(victims), "ok", log)


VERBS: tuple[Verb[Any], ...] = (
    Verb(
        "filter",
        wire.parse_extender_args,
        _filter,
        lambda message: wire.filter_error(None, message),
        reader=_filter_reader,
    ),
    # The reply is a bare HostPriorityList with no Error field: errors go out as HTTP 400/500, which
    # kube-scheduler logs and treats as "no score from this extender" (prioritizeNodes ignores
    # extender errors), so the pod still schedules on the other scores.
    Verb("prioritize", wire.parse_extender_args, _prioritize, None, reader=_prioritize_reader),
    Verb("bind", wire.parse_binding_args, _bind, wire.binding_result, blocking=True),
    # ExtenderPreemptionResult has no Error field: the error reply is an empty victims map (no eviction).
    Verb("preempt", wire.parse_preemption_args, _preempt, wire.preemption_error),
)


@dataclass(frozen=True, slots=True)
class Replied:
    """A call answered by the service. One is built per call, on every pod's path: slots, no dict."""

    verb: str
    call: _Call
    reply: Reply

    # What every answer of the service has in common: plain class attributes, not per-tuple fields.
    status: ClassVar[int] = 200
    message: ClassVar[str] = ""
    headers: ClassVar[Sequence[tuple[bytes, bytes]]] = ()
    timed: ClassVar[bool] = True

    @property
    def body(self) -> bytes:
        return self.reply.body

    @property
    def labels(self) -> tuple[str, str]:
        return (self.verb, self.reply.outcome)

    @property
    def level(self) -> int:
        if self.reply.outcome != "ok":
            return logging.WARNING
        return logging.INFO if self.verb == "bind" else logging.DEBUG

    def line(self, seconds: float) -> LogLine:
        verb, pod, outcome = self.verb, self.call.pod_ref, self.reply.outcome
        extra = {"event": f"extender.{verb}", "verb": verb, "pod": pod, **self.reply.log}
        return "%s %s: %s", (verb, pod, outcome), extra


@dataclass(frozen=True, slots=True)
class Refused:
    """A call not answered by the service: refused at the edge, unusable, or failed inside."""

    verb: str
    outcome: str  # bad_request, invalid or error
    status: int
    message: str
    body: bytes | None = None  # None: the error shape
    headers: Sequence[tuple[bytes, bytes]] = ()
    level: int = logging.WARNING

    @property
    def labels(self) -> tuple[str, str]:
        return (self.verb, self.outcome)

    @property
    def timed(self) -> bool:
        return self.outcome != "bad_request"

    def line(self, seconds: float) -> LogLine:
        extra: dict[str, object] = {"event": f"extender.{self.outcome}", "verb": self.verb}
        if self.outcome == "bad_request":
            extra["status"] = self.status
        return self.message, (), extra


class VerbHandler(Generic[Call]):
    """One verb over the service, for ``kgm.web.JsonEndpoint``."""

    methods = frozenset({"POST"})

    def __init__(self, verb: Verb[Call], service: ExtenderService) -> None:
        self.verb = verb
        self.service = service
        self.blocking = verb.blocking  # bind waits on the API server; filter and prioritize must not hop
        self._parse = verb.reader(service) if verb.reader is not None else verb.parse

    def check(self, scope: Scope) -> None:
        return None

    def rejected(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Refused:
        return Refused(self.verb.name, "bad_request", status, message, headers=headers)

    def parse(self, scope: Scope, body: bytes) -> Call:
        return self._parse(body)

    def answer(self, call: Call) -> Replied:
        return Replied(self.verb.name, call, self.verb.answer(self.service, call))

    def failed(self, scope: Scope, call: Call | None, error: Exception) -> tuple[Refused, LogLine | None]:
        name = self.verb.name
        if call is None and isinstance(error, wire.MalformedBodyError):
            return Refused(name, "bad_request", 400, str(error)), None
        if call is None and isinstance(error, wire.WireError):
            return self._error("invalid", str(error), 400, logging.WARNING), None
        if isinstance(error, PodError):  # the service could not read the call's pod: the caller's bug
            return self._error("invalid", f"Pod: {error}", 400, logging.WARNING), None
        pod = call.pod_ref if call is not None else None
        line: LogLine = ("%s failed", (name,), {"event": "extender.error", "verb": name, "pod": pod})
        return self._error("error", wire.INTERNAL_ERROR, 500, 0), line

    def _error(self, outcome: str, message: str, status_without_error_field: int, level: int) -> Refused:
        verb = self.verb
        if verb.error is None:
            return Refused(verb.name, outcome, status_without_error_field, message, level=level)
        return Refused(verb.name, outcome, 200, message, verb.error(message), level=level)
