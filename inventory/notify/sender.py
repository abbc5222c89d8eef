"""Outbound notifications (Slack, Teams, PagerDuty, generic JSON) sent off the caller's path.

``Notifier.notify`` never blocks and never raises: admission and scheduling call it inline. It puts the
notification on each subscribed endpoint's bounded queue and returns; one background thread runs an
asyncio loop with one task (a *lane*) per endpoint, so a slow or dead endpoint only delays itself, and
each endpoint gets its notifications in order (a PagerDuty resolve never overtakes its trigger).

Per endpoint, in this order: duplicates (same dedup_key and resolve flag inside the dedup window) are
suppressed; the queue is bounded (overflow is dropped and counted); each HTTP attempt takes a token
from a token bucket (``rateLimitBurst`` deep, refilled at ``rateLimitPerMinute``): a notification over
the limit *waits* for its token, it is never dropped for it, and the wait does not use up attempts;
only a full queue loses notifications, so a sustained excess ends as ``queue_full`` drops. Connection
errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter up to ``maxAttempts``
(a Retry-After longer than the backoff wins, up to the backoff cap); other 4xx are not retried.

Webhook URLs, header values and routing keys are secrets: logs and errors name the endpoint only.
Requests go straight to an httpx transport because ``httpx.Client`` logs every request URL at INFO;
httpcore's debug trace names each host and port it dials, so ``kgm.logs`` keeps it at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter

from inventory.domain.backoff import Backoff
from inventory.notify.formats import Endpoint, Notification, NotificationSettings, render


@dataclass(frozen=True, slots=True)
class NotifyMetrics:
    sent: Counter
    failed: Counter
    dropped: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> NotifyMetrics:
        return cls(
            sent=Counter(
                "kgm_notifications_sent",
                "Notifications delivered (2xx).",
                ["endpoint", "event"],
                registry=registry,
            ),
            failed=Counter(
                "kgm_notifications_failed",
                "Notifications given up on, by the last attempt's reason.",
                ["endpoint", "event", "reason"],
                registry=registry,
            ),
            dropped=Counter(
                "kgm_notifications_dropped",
                "Notifications not sent: queue_full, duplicate (suppressed), closed, shutdown, error.",
                ["reason"],
                registry=registry,
            ),
        )


class _Lane:
    """One endpoint's queue, dedup memory and token bucket. ``pending`` and ``seen`` are shared with
    callers' threads under ``lock``; the bucket is touched by the lane's task only."""

    def __init__(self, endpoint: Endpoint, *, burst: int, now: float) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.pending: deque[Notification] = deque()
        self.current: Notification | None = None
        self.seen: dict[tuple[str, bool], float] = {}
        self.wake: asyncio.Event | None = None
        self.tokens, self.refilled, self.burst = float(burst), now, burst
        self.prune_at = 0

    def admit(self, n: Notification, *, now: float, window: float, limit: int) -> str:
        """'queued', 'duplicate' or 'queue_full'. Call with ``lock`` held."""
        key = (n.dedup_key, n.resolve)
        stamp = self.seen.get(key)
        if stamp is not None and now - stamp < window:
            return "duplicate"
        if len(self.pending) >= limit:
            return "queue_full"
        # A state change clears the opposite state's memory: trigger, resolve, trigger all go out.
        self.seen.pop((n.dedup_key, not n.resolve), None)
        self.seen[key] = now
        if len(self.seen) > max(self.prune_at, 4 * limit):  # amortised: prune at most when it doubled
            self.seen = {k: t for k, t in self.seen.items() if now - t < window}
            self.prune_at = 2 * len(self.seen)
        self.pending.append(n)
        return "queued"

    async def take_token(self, per_second: float, clock: Callable[[], float]) -> None:
        while True:
            now = clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * per_second)
            self.refilled = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / per_second)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


#: (failure reason, or None when delivered; retryable; Retry-After seconds)
_Outcome = tuple[str | None, bool, float | None]


class Notifier:
    """Thread-safe; ``notify`` may be called from any thread, event loop or not, before or after
    ``start``. ``close``/``aclose`` stop intake and drain the queues within a timeout; what is left is
    counted as dropped (``shutdown``). Usable as a context manager (start, then close)."""

    def __init__(
        self,
        settings: NotificationSettings,
        *,
        registry: CollectorRegistry,
        logger: logging.Logger | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._metrics = NotifyMetrics.register(registry)
        self._log = logger or logging.getLogger("kgm.notify")
        self._transport = transport
        self._clock, self._jitter = clock, jitter
        # Each retry waits [0.5, 1) of the nominal backoff: spread, never longer than the nominal growth.
        self._backoff = Backoff(
            initial=settings.backoff_ms / 1000.0,
            maximum=settings.max_backoff_ms / 1000.0,
            factor=2.0,
            jitter=0.5,
            shorten_only=True,
        )
        burst = settings.rate_limit_burst
        self._lanes = tuple(_Lane(e, burst=burst, now=clock()) for e in settings.endpoints)
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s).as_dict()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._drain_until = 0.0

    def __enter__(self) -> Notifier:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Notifier:
        """Start the sending thread (idempotent); returns once its loop runs."""
        with self._lock:
            if self._thread is not None or self._closed:
                return self
            ready = threading.Event()
            self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), name="kgm-notify")
            self._thread.daemon = True
            self._thread.start()
        ready.wait(5.0)
        return self

    def notify(self, notification: Notification) -> bool:
        """Queue for every subscribed endpoint; never blocks, never raises. False if it was dropped for
        any endpoint (queue full, closed, unexpected error); a suppressed duplicate counts as accepted."""
        try:
            if self._closed:
                self._dropped("closed", notification, None)
                return False
            accepted, now, s = True, self._clock(), self._settings
            for lane in self._lanes:
                if notification.event not in lane.endpoint.events:
                    continue
                with lane.lock:
                    outcome = lane.admit(notification, now=now, window=s.dedup_window_s, limit=s.queue_size)
                if outcome == "queued":
                    self._wake(lane)
                else:
                    self._dropped(outcome, notification, lane.endpoint)
                    accepted = accepted and outcome == "duplicate"
            return accepted
        except Exception:  # never into admission or scheduling
            try:
                self._metrics.dropped.labels("error").inc()
                self._log.error("notification could not be queued", extra={"event": "notify.error"})
            except Exception:  # a broken log handler must not raise either
                pass
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Stop intake, send what is queued for up to ``timeout`` seconds, then stop (idempotent)."""
        with self._lock:
            already, self._closed = self._closed, True
            loop, stop, thread = self._loop, self._stop, self._thread
        if not already and loop is not None and stop is not None:
            self._drain_until = time.monotonic() + timeout
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 2.0)
        for lane in self._lanes:
            with lane.lock:
                left = len(lane.pending) + (lane.current is not None)
                lane.pending.clear()
                lane.current = None
            if left:
                self._metrics.dropped.labels("shutdown").inc(left)
                self._log.warning(
                    "%d notification(s) for endpoint %s not sent before shutdown",
                    left,
                    lane.endpoint.name,
                    extra={"event": "notify.dropped", "endpoint": lane.endpoint.name, "reason": "shutdown"},
                )

    async def aclose(self, timeout: float = 5.0) -> None:
        """``close`` without blocking the running event loop."""
        await asyncio.to_thread(self.close, timeout)

    # -- the sending thread ------------------------------------------------------------------------

    def _wake(self, lane: _Lane) -> None:
        loop, wake = self._loop, lane.wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # closing: close() counts what is left
                loop.call_soon_threadsafe(wake.set)

    async def _main(self, ready: threading.Event) -> None:
        stop = asyncio.Event()
        for lane in self._lanes:
            lane.wake = asyncio.Event()
        transport = self._transport or httpx.AsyncHTTPTransport(retries=0)
        tasks = [asyncio.create_task(self._run_lane(lane, transport, stop)) for lane in self._lanes]
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            if self._closed:  # close() ran before there was a loop to signal
                stop.set()
        ready.set()
        try:
            await stop.wait()
            for lane in self._lanes:
                self._wake(lane)
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=max(0.0, self._drain_until - time.monotonic()))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            if self._transport is None:
                await transport.aclose()

    async def _run_lane(self, lane: _Lane, transport: httpx.AsyncBaseTransport, stop: asyncio.Event) -> None:
        assert lane.wake is not None
        while True:
            with lane.lock:
                lane.current = n = lane.pending.popleft() if lane.pending else None
            if n is None:
                if stop.is_set():
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            await self._deliver(lane, n, transport)
            lane.current = None  # not in a finally: a cancelled delivery is counted at shutdown

    async def _deliver(self, lane: _Lane, n: Notification, transport: httpx.AsyncBaseTransport) -> None:
        ep, s = lane.endpoint, self._settings
        reason: str | None = "error"
        attempt = 0
        try:
            body = orjson.dumps(render(n, fmt=ep.format, routing_key=ep.routing_key, source=ep.source))
        except Exception:
            return self._failed(lane, n, "render", attempt)
        delays = self._backoff.delays(self._jitter)
        for attempt in range(1, s.max_attempts + 1):
            await lane.take_token(ep.rate_limit_per_minute / 60.0, self._clock)
            try:
                reason, retryable, retry_after = await self._attempt(transport, ep, body)
            except Exception:  # an unexpected library error must not end the lane
                reason, retryable, retry_after = "error", False, None
            if reason is None:
                self._metrics.sent.labels(ep.name, n.event).inc()
                self._log.debug(
                    "notification %s sent to endpoint %s",
                    n.event,
                    ep.name,
                    extra={"event": "notify.sent", "endpoint": ep.name, "attempts": attempt},
                )
                return None
            if not retryable or attempt == s.max_attempts:
                break
            delay = max(next(delays), min(retry_after or 0.0, self._backoff.maximum))
            self._log.info(
                "notification %s to endpoint %s: attempt %d failed (%s), retrying in %.2f s",
                n.event,
                ep.name,
                attempt,
                reason,
                delay,
                extra={"event": "notify.retry", "endpoint": ep.name, "reason": reason, "attempts": attempt},
            )
            await asyncio.sleep(delay)
        return self._failed(lane, n, reason or "error", attempt)

    async def _attempt(self, transport: httpx.AsyncBaseTransport, ep: Endpoint, body: bytes) -> _Outcome:
        headers = httpx.Headers({"content-type": "application/json", "user-agent": "kgm-notify"})
        headers.update(ep.headers)
        timeout = {"timeout": self._timeout}
        request = httpx.Request("POST", ep.url, headers=headers, content=body, extensions=timeout)
        try:  # httpx's timeouts are per operation: this one caps the whole request
            async with asyncio.timeout(self._settings.timeout_s):
                response = await transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return "timeout", True, None
        except httpx.TransportError:
            return "connection", True, None
        status = response.status_code
        if 200 <= status < 300:
            return None, False, None
        retryable = status == 429 or status >= 500
        return f"http_{status}", retryable, _retry_after(response.headers.get("retry-after"))

    def _failed(self, lane: _Lane, n: Notification, reason: str, attempts: int) -> None:
        name = lane.endpoint.name
        with lane.lock:  # forget it, so that a repeat inside the window is tried again
            lane.seen.pop((n.dedup_key, n.resolve), None)
        self._metrics.failed.labels(name, n.event, reason).inc()
        self._log.warning(
            "notification %s to endpoint %s failed after %d attempt(s): %s",
            n.event,
            name,
            attempts,
            reason,
            extra={
                "event": "notify.failed",
                "endpoint": name,
                "notification": str(n.event),
                "dedup_key": n.dedup_key,
                "reason": reason,
                "attempts": attempts,
            },
        )

    def _dropped(self, reason: str, n: Notification, endpoint: Endpoint | None) -> None:
        self._metrics.dropped.labels(reason).inc()
        name = endpoint.name if endpoint is not None else None
        extra = {"event": "notify.dropped", "endpoint": name, "reason": reason, "dedup_key": n.dedup_key}
        level = logging.DEBUG if reason == "duplicate" else logging.WARNING
        self._log.log(level, "notification %s dropped for %s: %s", n.event, name, reason, extra=extra)
