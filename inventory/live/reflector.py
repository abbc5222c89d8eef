"""List, then watch from the list's resourceVersion: how kube-scheduler and every informer keep a cache.

A :class:`Reflector` hands its consumer the complete list (``on_replace``: replace your state), then
every change after it (``on_event``), and keeps doing so whatever the API server does:

* a watch that ends normally (the server's ``timeoutSeconds``) is reopened from the last
  resourceVersion seen; BOOKMARK events advance that version and are not passed on;
* ``410 Gone`` (the version fell out of the server's history) means events were missed: list again,
  hand over the complete list, watch from there; so does a "too large resource version" (the server
  has not seen our version: it lags behind the one we listed from, or etcd was restored from a
  backup, when it never will), as client-go's reflector does;
* any other :class:`~inventory.kube.KubeError` is retried after an exponential backoff with jitter
  (reset once a watch makes progress); an unavailable server is watched again from the last version,
  anything else is listed again first;
* an exception raised by a callback is logged and the loop goes on (a failed ``on_replace`` is retried
  with a new list, since the consumer did not take the state).

It stops only when asked (``stop``): between events, and at once during a backoff. A watch blocked on a
silent connection returns at the latest when the server ends it, after ``watch_timeout_seconds``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from inventory.domain import backoff
from inventory.kube import (
    KubeError,
    KubeGoneError,
    KubeUnavailableError,
    KubeVersionTooLargeError,
    Listing,
    WatchEvent,
)

#: A watch that ends sooner than this without a single event is treated as a failure (client-go does the
#: same): a server or proxy that closes watches at once would otherwise be hammered in a tight loop.
MIN_HEALTHY_WATCH_SECONDS = 1.0


class Backoff(backoff.Backoff):
    """The domain's :class:`~inventory.domain.backoff.Backoff` as a reflector waits: never zero (a relist
    must not hammer the API server), its jitter drawn from :mod:`random` unless told otherwise."""

    __slots__ = ()

    def __post_init__(self) -> None:
        backoff.Backoff.__post_init__(self)
        if self.initial <= 0:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial} and {self.maximum}")

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The endless sequence of waits; ``rand`` returns a number in [0, 1) (0.5 means no jitter)."""
        return backoff.Backoff.delays(self, rand)


class _CallbackFailedError(Exception):
    """on_replace raised: the consumer did not take the list, so it gets a new one after a backoff."""


class Reflector:
    """Keep a consumer in step with one kind of object: list, then watch; relist when the watch expires."""

    def __init__(
        self,
        *,
        name: str,
        list_fn: Callable[[], Listing],
        watch_fn: Callable[[str, int], Iterator[WatchEvent]],
        on_replace: Callable[[list[dict[str, Any]], str], None],
        on_event: Callable[[WatchEvent], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        backoff: Backoff | None = None,
        rand: Callable[[], float] = random.random,
        watch_timeout_seconds: int = 300,
        logger: logging.Logger | None = None,
    ) -> None:
        """``sleep``: how to wait out a backoff; by default a wait on the ``stop`` event given to :meth:`run`,
        so that stopping does not wait for the backoff to end. ``rand`` feeds the backoff's jitter.
        ``watch_timeout_seconds``: how long the server keeps one watch open before it ends it (normally).
        """
        self.name = name
        self._list_fn = list_fn
        self._watch_fn = watch_fn
        self._on_replace = on_replace
        self._on_event = on_event
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or Backoff()
        self._rand = rand
        self._watch_timeout = watch_timeout_seconds
        self._log = logger or logging.getLogger(__name__)
        self._extra = {"reflector": name}

        #: Set once the consumer has taken a first complete list (readiness).
        self.has_synced = threading.Event()
        #: The resourceVersion the next watch starts from ("" before the first list).
        self.resource_version = ""
        #: Complete lists taken after the first one (after a 410, or after a failure that needs one).
        self.relists = 0
        #: Watches opened again after the first one that followed a list (a normal end or a failure).
        self.restarts = 0
        #: Failures that were waited out with a backoff.
        self.failures = 0
        self._progressed = False  # whether the current round has received an event yet

    def run(self, stop: threading.Event) -> None:
        """List and watch until ``stop`` is set; never returns otherwise, never raises a KubeError."""
        delays = self._backoff.delays(self._rand)
        need_list = True
        fresh_list = False
        expired_in_a_row = 0
        while not stop.is_set():
            self._progressed = False
            try:
                if need_list:
                    self._list()
                    need_list, fresh_list = False, True
                elif not fresh_list:
                    self.restarts += 1
                fresh_list = False
                self._watch(stop)
            except (KubeGoneError, KubeVersionTooLargeError) as error:
                # Events were missed, or our version is unknown here: only a complete list is right
                # again. A second one in a row with no progress in between (a server that expires
                # everything, or one still catching up) is waited out like a failure.
                need_list = True
                if self._progressed:
                    delays, expired_in_a_row = self._backoff.delays(self._rand), 0
                expired_in_a_row += 1
                self._log.info(
                    "watch expired, listing again"
                    if isinstance(error, KubeGoneError)
                    else "resource version unknown to the server, listing again",
                    extra={**self._extra, "event": "reflector.expired", "error": str(error)},
                )
                if expired_in_a_row > 1:
                    self._wait(next(delays), stop)
            except (KubeError, _CallbackFailedError) as error:
                # An unavailable server may still hold our version: watch again from it. Anything else
                # (forbidden, a malformed answer, a failed on_replace) starts again from a list.
                need_list = need_list or not isinstance(error, KubeUnavailableError)
                self.failures += 1
                if self._progressed:  # events flowed before it broke: the first retry comes soon
                    delays = self._backoff.delays(self._rand)
                delay = next(delays)
                self._log.warning(
                    "list or watch failed, retrying",
                    extra={
                        **self._extra,
                        "event": "reflector.failed",
                        "error": str(error),
                        "status": getattr(error, "status", None),
                        "retry_in_s": round(delay, 3),
                    },
                )
                self._wait(delay, stop)
            else:
                delays = self._backoff.delays(self._rand)  # the watch ran its course: healthy again
                expired_in_a_row = 0

    def _list(self) -> None:
        listing = self._list_fn()
        if self.has_synced.is_set():
            self.relists += 1
        try:
            self._on_replace(listing.items, listing.resource_version)
        except Exception as error:
            self._callback_failed("on_replace")
            raise _CallbackFailedError(f"on_replace: {error!r}") from error
        self.resource_version = listing.resource_version
        self.has_synced.set()
        self._log.debug(
            "listed",
            extra={
                **self._extra,
                "event": "reflector.listed",
                "items": len(listing.items),
                "resource_version": listing.resource_version,
            },
        )

    def _watch(self, stop: threading.Event) -> None:
        """One watch, to its end or to ``stop``; raises when it fails or ends at once with no event."""
        started = self._clock()
        events = self._watch_fn(self.resource_version, self._watch_timeout)
        try:
            for event in events:
                self._progressed = True
                if event.resource_version:  # servers that send none (test servers) keep the last one
                    self.resource_version = event.resource_version
                if event.type != "BOOKMARK":
                    try:
                        self._on_event(event)
                    except Exception:
                        self._callback_failed("on_event")
                if stop.is_set():
                    return
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a generator left mid-stream releases its connection now, not at garbage collection
        if not self._progressed and not stop.is_set() and self._clock() - started < MIN_HEALTHY_WATCH_SECONDS:
            raise KubeUnavailableError("the watch ended at once with no event")

    def _callback_failed(self, callback: str) -> None:
        self._log.exception(
            "reflector callback failed",
            extra={**self._extra, "event": "reflector.callback_failed", "callback": callback},
        )

    def _wait(self, seconds: float, stop: threading.Event) -> None:
        if self._sleep is None:
            stop.wait(seconds)
        else:
            self._sleep(seconds)
