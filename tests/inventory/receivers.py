"""Real HTTP receivers on loopback for the notifier's tests.

A small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) on 127.0.0.1 in a background thread.
It records every request as it arrives and answers each one by the next ``Reply`` of its script, then by
its default: a status with headers, after a delay (slow, or longer than the client's timeout), or never
(``HANG``: accept, read, and keep the connection open without answering). ``close()`` ends the handlers
and the thread and closes every socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""
    hang: bool = False
    """Never answer."""


OK = Reply()
HANG = Reply(hang=True)


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """time.monotonic() on arrival."""
    reply: Reply

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, *script: Reply, default: Reply = OK, path: str = "/hook") -> None:
        self._script = deque(script)
        self._default = default
        self._path = path
        self._changed = threading.Condition()
        self._requests: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._serve, name="test-receiver", daemon=True)
        self._thread.start()
        if not self._started.wait(5.0) or self._server is None:
            raise RuntimeError("receiver did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    @property
    def requests(self) -> list[Received]:
        with self._changed:
            return list(self._requests)

    @property
    def delivered(self) -> list[Received]:
        """Requests answered (or to be answered) with a 2xx."""
        return [r for r in self.requests if not r.reply.hang and 200 <= r.reply.status < 300]

    def wait_for(self, count: int, *, timeout: float = 5.0, delivered: bool = True) -> list[Received]:
        """The first ``count`` delivered (or, with ``delivered=False``, received) requests."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = self.delivered if delivered else list(self._requests)
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests within {timeout} s, got {len(got)}")
                self._changed.wait(left)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)

    # -- server thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            # Repeat: a connection accepted just before close() gets its handler task a moment later.
            while tasks := asyncio.all_tasks(loop):
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0.01))  # let closed transports finish closing
            loop.close()

    def _next(self) -> Reply:
        with self._changed:
            return self._script.popleft() if self._script else self._default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The loop keeps tasks only weakly: hold each handler until it ends.
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                _, target, _ = head[0].split(" ", 2)
                headers = {}
                for line in head[1:]:
                    if line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = self._next()
                with self._changed:
                    self._requests.append(Received(target, headers, body, time.monotonic(), reply))
                    self._changed.notify_all()
                if reply.hang:  # never answer; end when the client gives up and closes
                    while await reader.read(65536):
                        pass
                    return
                await asyncio.sleep(reply.delay)
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                phrase = HTTPStatus(reply.status).phrase
                writer.write(f"HTTP/1.1 {reply.status} {phrase}\r\ncontent-length: 0\r\n{extra}\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # close(): end quietly, or 3.11's stream callback logs the cancellation as an error.
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


def refused_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def eventually(check: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.005)
