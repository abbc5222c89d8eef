"""Background work belongs to the app's lifetime: built with the app, run from startup to shutdown.

Assembly only *describes* the loops (:class:`Worker`) and the parts that run threads of their own
(:class:`Service`); nothing starts while the app is built or imported. :func:`lifespan` (Starlette's
``lifespan=``) starts them when the server starts and, when it shuts down, sets the shared stop event,
closes the services and joins every thread within ``join_timeout_s`` in all. A thread still running then
is logged and left behind: they are daemon threads, and a reflector blocked in a watch notices the stop
only when the API server ends that watch (``ServeSettings.watch_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

logger = logging.getLogger("kgm.lifespan")


@dataclass(frozen=True, slots=True)
class Worker:
    """A loop run on a thread of its own."""

    name: str
    """The thread's name (what a thread dump and the shutdown log show)."""

    run: Callable[[threading.Event], None]
    """The loop; returns soon after the event it is handed is set."""


@dataclass(frozen=True, slots=True)
class Service:
    """A part that runs its own threads (the notifier's sending loop)."""

    name: str
    start: Callable[[], object]
    """Starts its threads."""

    close: Callable[[], None]
    """Stops them, waiting for them within a bound of its own."""


class Background:
    """The background work of one app: started once, stopped once."""

    def __init__(
        self,
        *,
        join_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        """``join_timeout_s``: how long a shutdown waits, in all, for the threads to end."""
        #: Set at shutdown; every worker's loop is handed it.
        self.stop = threading.Event()
        self.workers: list[Worker] = []
        self.services: list[Service] = []
        self._join_timeout = join_timeout_s
        self._clock = clock
        self._log = log
        self._threads: list[threading.Thread] = []
        self._started: list[Service] = []
        self._lock = threading.Lock()
        self._state = "built"

    def add(self, work: Worker | Service) -> None:
        """One more piece of work, before the start."""
        if self._state != "built":
            raise RuntimeError(f"background work added when {self._state}: {work.name}")
        if isinstance(work, Worker):
            self.workers.append(work)
        else:
            self.services.append(work)

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The workers' threads, once started."""
        return tuple(self._threads)

    def start(self) -> None:
        """Start the services, then one daemon thread per worker (once; a second call does nothing)."""
        with self._lock:
            if self._state != "built":
                return
            self._state = "started"
            for service in self.services:
                service.start()
                self._started.append(service)
            for worker in self.workers:
                thread = threading.Thread(target=worker.run, args=(self.stop,), name=worker.name, daemon=True)
                thread.start()
                self._threads.append(thread)
        self._log.info(
            "background work started",
            extra={"event": "serve.background_started", "threads": [w.name for w in self.workers]},
        )

    def shutdown(self) -> list[str]:
        """Signal every worker, close the services (last started, first closed), join the threads within
        the timeout; the names of the threads still running (logged), empty when all ended."""
        with self._lock:
            self._state = "stopped"
            self.stop.set()
            services, self._started = self._started[::-1], []
        for service in services:
            try:
                service.close()
            except Exception:  # one failed close must not keep the others running
                self._log.exception(
                    "background service failed to close",
                    extra={"event": "serve.background_error", "service": service.name},
                )
        deadline = self._clock() + self._join_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock()))
        running = [thread.name for thread in self._threads if thread.is_alive()]
        if running:
            self._log.warning(
                "background threads still running at shutdown; left behind",
                extra={
                    "event": "serve.background_not_stopped",
                    "threads": running,
                    "timeout_s": self._join_timeout,
                },
            )
        return running

    @contextlib.contextmanager
    def running(self) -> Iterator[Background]:
        """Started inside the block, shut down when it ends (however it ends)."""
        self.start()
        try:
            yield self
        finally:
            self.shutdown()


def lifespan(background: Background) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """Starlette's ``lifespan=``: start ``background`` at startup, shut it down at shutdown (the joins
    run on a worker thread, so the event loop is not blocked while threads wind down)."""

    @contextlib.asynccontextmanager
    async def run(app: object) -> AsyncIterator[None]:
        background.start()
        try:
            yield
        finally:
            await asyncio.to_thread(background.shutdown)

    return run
