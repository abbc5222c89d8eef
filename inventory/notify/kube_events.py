"""The Event recorder of ``kgm serve``: Events on pods through the API server, off the request path.

:meth:`KubeEventRecorder.record` decides under a lock, in memory, and queues; one thread of its own
sends. So the extender's filter, the reconciler and anything else that tells a user something never
wait for the API server, and a failure to record is logged, never raised.

Repeats are aggregated per (pod, reason), as client-go's recorder does for an identical event: the
first occurrence creates the Event, later ones add to its ``count`` and move ``lastTimestamp`` (a merge
patch), at most once per ``repeat_interval_s`` (occurrences in between are counted and go out with
the next patch). kube-scheduler retries an unschedulable pod every few seconds; its Event says
"x40 over 10m", not forty Events. An Event the API server has dropped meanwhile (it keeps them an
hour by default) is created again with the count so far.

Memory is bounded: at most ``remembered`` (pod, reason) pairs (the least recently seen is forgotten,
its next occurrence starts a new Event) and ``queue_size`` Events waiting to be sent (past that, new
ones are dropped and counted in the log).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from inventory.domain.bounded import BoundedDict
from inventory.domain.events import PodEvent, event_body, event_name, repeat_patch
from inventory.kube.errors import KubeNotFoundError


class EventSink(Protocol):
    """The calls the recorder makes (``inventory/kube/events.py``'s ``Events``; KubeClient has them)."""

    def create_event(
        self, namespace: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]: ...

    def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EventSettings:
    queue_size: int = 1000
    """Events waiting to be sent, at most; past that new ones are dropped (and counted in the log)."""

    remembered: int = 4096
    """(pod, reason) pairs remembered for aggregation (about 300 bytes each)."""

    repeat_interval_s: float = 30.0
    """A repeated Event is patched at most this often (seconds); occurrences in between are counted."""

    timeout_s: float = 5.0
    """Seconds one create or patch may take in all."""


@dataclass(slots=True)
class _Series:
    """One Event as sent so far: its name, first occurrence, occurrences counted, when last sent."""

    name: str
    first: datetime
    count: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class _Send:
    """An Event to create (``patch`` None) or to patch (its ``body`` to create again if it is gone)."""

    namespace: str
    name: str
    body: dict[str, Any]
    patch: dict[str, Any] | None = None


class KubeEventRecorder:
    """Records :class:`PodEvent` s as core/v1 Events through ``sink``; thread-safe; never blocks on I/O."""

    def __init__(
        self,
        sink: EventSink,
        *,
        instance: str,
        settings: EventSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        suffix: Callable[[], str] = lambda: secrets.token_hex(8),
        logger: logging.Logger | None = None,
    ) -> None:
        """``instance``: ``reportingInstance``, this replica (its pod name); ``suffix``: the unique end
        of a new Event's name (``<pod>.<suffix>``)."""
        self._sink = sink
        self._instance = instance
        self._settings = settings or EventSettings()
        self._clock = clock
        self._monotonic = monotonic
        self._suffix = suffix
        self._log = logger or logging.getLogger("kgm.events")
        self._series: BoundedDict[tuple[str, str, str], _Series] = BoundedDict(self._settings.remembered)
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Send] = queue.Queue(maxsize=self._settings.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failed = 0

    def record(self, event: PodEvent) -> None:
        """Count ``event`` and queue what the API server must hear of it, if anything (never raises)."""
        try:
            send = self._decide(event)
            if send is not None:
                self._queue.put_nowait(send)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            if dropped == 1 or dropped % 100 == 0:  # one line per hundred, not one per event
                self._log.warning(
                    "event queue full; event dropped",
                    extra={"event": "events.dropped", "dropped": dropped, "reason": event.reason},
                )
        except Exception as error:  # telling a user must never fail the request that found out
            self._log.warning(
                "event not recorded", extra={"event": "events.record_failed", "error": repr(error)}
            )

    def _decide(self, event: PodEvent) -> _Send | None:
        pod = event.pod
        key = (pod.namespace, pod.uid or pod.name, event.reason)
        now, tick = self._clock(), self._monotonic()
        with self._lock:
            series = self._series.use(key)
            if series is None:
                series = _Series(event_name(pod, self._suffix()), now, 1, tick)
                self._series[key] = series
            else:
                series.count += 1
                if tick - series.sent_at < self._settings.repeat_interval_s:
                    return None  # counted; the next patch carries it
                series.sent_at = tick
            body = event_body(
                event,
                name=series.name,
                instance=self._instance,
                first=series.first,
                last=now,
                count=series.count,
            )
            patch = repeat_patch(event, last=now, count=series.count) if series.count > 1 else None
            return _Send(pod.namespace, series.name, body, patch)

    # The sending thread

    def start(self) -> None:
        """Start the sending thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop sending (Events still queued are dropped) and wait for the thread within ``timeout_s``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def flush(self) -> None:
        """Send everything queued now, on the caller's thread (tests, and a recorder never started)."""
        while True:
            try:
                send = self._queue.get_nowait()
            except queue.Empty:
                return
            self._send(send)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                send = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._send(send)
            except Exception:  # not even the log line went out: the thread must live on
                self.failed += 1

    def _send(self, send: _Send) -> None:
        timeout = self._settings.timeout_s
        try:
            if send.patch is not None:
                try:
                    self._sink.patch_event(send.namespace, send.name, send.patch, timeout_s=timeout)
                    return
                except KubeNotFoundError:
                    pass  # expired on the server (or its create failed): create it again, count kept
            self._sink.create_event(send.namespace, send.body, timeout_s=timeout)
        except Exception as error:  # the API server's trouble: logged, the request paths never see it
            with self._lock:
                self.failed += 1
            self._log.warning(
                "event not recorded",
                extra={
                    "event": "events.record_failed",
                    "namespace": send.namespace,
                    "event_name": send.name,
                    "reason": send.body.get("reason"),
                    "error": str(error),
                },
            )
