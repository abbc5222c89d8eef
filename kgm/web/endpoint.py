"""One bounded JSON endpoint, used by ``/mutate``, ``/extender/<verb>`` and every ``/api/v1`` path.

What the three share at the HTTP edge lives here once: the method check (405 with ``Allow``), a
bounded body read under a time limit (413, 408), the metrics, the log line, and a catch-all that turns
an exception into a well-formed answer. What differs is the route's :class:`Handler` (parse the call,
call the core, serialize), which says in an :class:`Answer` what to write and how to count and log it.
The handlers live in ``webhook``, ``extender`` and ``inventory.api``, which never import ``kgm``: they
meet both Protocols by shape.

Plain ASGI rather than framework request objects: /mutate and the extender's verbs sit in the API
server's and kube-scheduler's request paths (benchmarks/webhook/ and benchmarks/extender.py measure
them), so between the last byte and the answer this does nothing the handler does not ask for: no
request object, no await but the body read and the send, no thread hop unless the handler blocks, and
no log record built for a line the logger would drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Counter, Histogram
from starlette.types import Receive, Scope, Send

from kgm.web.asgi import BodyTooLargeError, error_body, read_body, send_json

#: A log line: the message, its %-arguments, and the record's extra fields (``event`` among them).
LogLine = tuple[str, tuple[object, ...], Mapping[str, object]]

Call = TypeVar("Call")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class Answer(Protocol):
    """What to answer one request, and how to count and log it."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes | None:
        """The body to write; None for an error, written as ``{"error": {"code", "message"}}``."""

    @property
    def message(self) -> str:
        """The error's message (when ``body`` is None)."""

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The values of the request counter's labels; None: not counted."""

    @property
    def timed(self) -> bool:
        """Whether the latency histogram observes this answer."""

    @property
    def level(self) -> int:
        """The level of its log line; 0: none."""

    def line(self, seconds: float) -> LogLine:
        """Its log line, built only when the logger takes ``level``; ``seconds`` since the last byte."""


class Handler(Protocol[Call]):
    """One route's own part: parse the call, call the core, serialize; and word its failures."""

    @property
    def methods(self) -> Collection[str]:
        """The methods it answers; any other gets 405 with ``Allow``."""

    @property
    def blocking(self) -> bool:
        """Whether :meth:`check` and :meth:`answer` wait on I/O (a database, the API server, a token
        review): they then run in a worker thread."""

    def check(self, scope: Scope) -> Answer | None:
        """Before the body is read (who is asking): a refusal, or None to go on."""

    def rejected(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Answer:
        """The endpoint's own refusals (405, 413, 408), with the error and headers to send."""

    def parse(self, scope: Scope, body: bytes) -> Call: ...

    def answer(self, call: Call) -> Answer: ...

    def failed(self, scope: Scope, call: Call | None, error: Exception) -> tuple[Answer, LogLine | None]:
        """What to answer when parsing or answering raised (``call`` is None if parsing did), and the
        line to log with the traceback (None for an expected refusal such as a malformed body)."""


class ReadDeadlines:
    """The time limit of the body reads of one endpoint, kept by one sweep per tick rather than by a timer
    per request.

    ``asyncio.timeout`` schedules and cancels a timer for every request: about 10 us on uvloop, a third
    of what a remembered admission decision costs in all (benchmarks/webhook/). Here a read is an entry
    in a dict; while any is open, a callback every ``tick`` seconds cancels the tasks past their
    deadline, so a read is cut off between ``timeout`` and ``timeout + tick`` seconds after it began.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(1.0, max(timeout / 10, 0.005))
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        # The loop a sweep is scheduled on; None: none is. (A test may serve one endpoint from one
        # event loop after another: a sweep left on a closed loop must not stand for one on this.)
        self._sweeping: asyncio.AbstractEventLoop | None = None

    def begin(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel (nothing serves ASGI so)
            return None
        self._reads[task] = time.monotonic() + self.timeout
        loop = task.get_loop()
        if self._sweeping is not loop:
            self._sweeping = loop
            loop.call_later(self._tick, self._sweep, loop)
        return task

    def end(self, task: asyncio.Task[Any] | None) -> bool:
        """Close the read of ``task``; True if its deadline had passed (it was cancelled for it)."""
        self._reads.pop(task, None)  # type: ignore[arg-type]
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeping is not loop:
            return  # superseded by a sweep on another loop
        now = time.monotonic()
        # A task in the dict is suspended in its read (its only await between begin and end), so the
        # cancellation lands there, even when the body has come and the task has yet to resume.
        for task in [task for task, deadline in self._reads.items() if deadline <= now]:
            del self._reads[task]
            self._expired.add(task)
            task.cancel()
        if self._reads:
            loop.call_later(self._tick, self._sweep, loop)
        else:
            self._sweeping = None


@dataclass(frozen=True, slots=True)
class Wording:
    """The endpoint's refusals in the route's words: ``{method}`` and ``{allow}`` for 405, ``{limit}``
    (bytes) for 413, ``{timeout}`` (seconds) for 408."""

    not_allowed: str
    too_large: str
    too_slow: str


class JsonEndpoint(Generic[Call]):
    """A plain ASGI endpoint around one :class:`Handler`: the same edge for every JSON route we serve."""

    def __init__(
        self,
        handler: Handler[Call],
        *,
        wording: Wording,
        max_body_bytes: int,
        read_timeout: float,
        logger: logging.Logger,
        requests: Counter | None = None,
        latency: Histogram | None = None,
    ) -> None:
        """``requests`` is labelled by each answer's ``labels``; ``latency`` comes with the route's
        labels already applied (``histogram.labels(route)``), or has none."""
        self.handler = handler
        self._wording = wording
        self._max_body_bytes = max_body_bytes
        self._read_timeout = read_timeout
        self._deadlines = ReadDeadlines(read_timeout)
        self._logger = logger
        self._requests = requests
        # The counter's children by label values, each resolved once: ``labels()`` takes a lock and
        # builds a key on every call. Label values come from fixed sets, so this stays small.
        self._children: dict[tuple[str, ...], Any] = {}
        self._latency = latency
        # What a handler is (its methods, whether it blocks) is read once: a class's constants, read
        # per request at a property's cost on the hot paths.
        self._methods = frozenset(handler.methods)
        self._blocking = bool(handler.blocking)
        allow = ", ".join(sorted(handler.methods))
        self._allow = allow
        self._allow_headers = ((b"allow", allow.encode()),)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler, blocking = self.handler, self._blocking
        method = scope["method"]
        call: Call | None = None
        answer: Answer | None
        started = 0.0  # from the last byte: set once the body is in (or known not to come)
        try:
            if method not in self._methods:
                message = self._wording.not_allowed.format(method=method, allow=self._allow)
                answer = handler.rejected(scope, 405, message, self._allow_headers)
            elif blocking:  # e.g. the REST API's TokenReview: never on the event loop
                answer = await asyncio.to_thread(handler.check, scope)
            else:
                answer = handler.check(scope)
            body = b""
            if answer is None and method in _WITH_BODY:
                reading = self._deadlines.begin()
                try:
                    body = await read_body(scope, receive, self._max_body_bytes)
                except BodyTooLargeError:
                    message = self._wording.too_large.format(limit=self._max_body_bytes)
                    answer = handler.rejected(scope, 413, message, ())
                except asyncio.CancelledError:
                    if not self._deadlines.end(reading):
                        raise  # not ours: the server stops, or the client went away
                    assert reading is not None
                    reading.uncancel()
                    message = self._wording.too_slow.format(timeout=self._read_timeout)
                    answer = handler.rejected(scope, 408, message, ())
                finally:
                    self._deadlines.end(reading)
            started = time.perf_counter()
            if answer is None:
                call = handler.parse(scope, body)
                if blocking:
                    answer = await asyncio.to_thread(handler.answer, call)
                else:  # the hot paths (admission, filter, prioritize) are CPU-only: no thread hop
                    answer = handler.answer(call)
        except Exception as error:  # a bug must still get the caller a well-formed answer
            started = started or time.perf_counter()
            answer, line = handler.failed(scope, call, error)
            if line is not None:
                self._logger.exception(line[0], *line[1], extra=line[2])
        self._record(answer, time.perf_counter() - started)
        payload = answer.body
        if payload is None:
            payload = error_body(answer.status, answer.message)
        await send_json(send, answer.status, payload, answer.headers)

    def _record(self, answer: Answer, seconds: float) -> None:
        # Before the send, so a client that reads /metrics right after its answer finds it counted.
        labels = answer.labels
        if labels is not None and self._requests is not None:
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self._requests.labels(*labels)
            child.inc()
        if answer.timed and self._latency is not None:
            self._latency.observe(seconds)
        level = answer.level
        if level and self._logger.isEnabledFor(level):  # no record is built for a dropped debug line
            message, args, extra = answer.line(seconds)
            self._logger.log(level, message, *args, extra=extra)


class NotFound:
    """Any other path under a JSON API's prefix: the error shape rather than a framework page."""

    def __init__(self, what: str) -> None:
        self._what = what

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 404, error_body(404, f"no such {self._what}: {scope['path']}"))
