"""What one HTTPS connection may cost before its request is read: a deadline for the headers, a cap on
their size and a cap on connections open at once (:class:`kgm.settings.ConnectionLimits`).

Uvicorn bounds none of the three with httptools (issue 11, item 3): a connection sending half a request
line stayed open for good (~260 KiB of TLS buffers each; 4,500 took 1.3 GB), a 50 MB header was read
whole, and ``limit_concurrency`` answers 503 on every connection once the limit is reached, the ones it
already serves included. This protocol adds them as Go's net/http does (``ReadHeaderTimeout``: close
unanswered; ``MaxHeaderBytes``: 431) and keeps the connections admitted before the cap served.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kgm.settings import ConnectionLimits

logger = logging.getLogger("kgm.connections")

# A connection beyond the cap is answered 503 once its request line and headers are read (answering
# before reading them could reset the connection under the answer); a client sends them with its
# first write, so it gets at most this long, however long the header deadline is.
OVER_CAP_GRACE_S = 1.0

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"Request Header Fields Too Large"
)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with :class:`ConnectionLimits`; :func:`limited_protocol` binds them.

    A request's *head* (request line and headers) must end within ``header_timeout_s`` of the
    connection's start or of the head's first byte, and within ``max_header_bytes`` bytes, else the
    connection is closed unanswered, or answered 431 and closed. A connection opened while
    ``max_connections`` are already open closes the one that has waited longest for a request head
    (a slow or silent client; an idle keep-alive waits for none) and takes its place; with none
    waiting, each of its requests is answered 503 (and it is then closed).
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # The connections whose head deadline runs, oldest first (one dict per limited_protocol class).
    _waiting: ClassVar[dict[LimitedHttpToolsProtocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes that come next belong to a request's head
        self._head_bytes = 0
        self._heads_read = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn checks self.limit_concurrency as each request's headers end, against every
        # connection open then; decided here once, per connection, those admitted stay served.
        # A slow-loris flood filling the cap would otherwise lock out probes and the API server.
        timeout = self.limits.header_timeout_s
        if len(self.connections) > self.limits.max_connections and not self._evict_slowest():
            self.limit_concurrency = 0  # uvicorn answers 503 with connection: close
            timeout = min(timeout, OVER_CAP_GRACE_S)
        else:
            self.limit_concurrency = None
        self._arm(timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if not self._in_head:
                super().data_received(data)
                return
            if self._head_deadline is None:  # a request's first byte after an idle keep-alive
                self._arm(self.limits.header_timeout_s)
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # Feed only what the cap allows: the head must end within it. What follows its end is a
            # body or the next request, and goes round again.
            heads_read = self._heads_read
            if room > 0:
                self._head_bytes += room
                super().data_received(data[:room])
            if self._heads_read == heads_read:
                if not self.transport.is_closing():  # else the parser has answered 400
                    self._refuse_too_large()
                return
            data = data[room:]

    def on_headers_complete(self) -> None:
        self._heads_read += 1
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _arm(self, timeout: float) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(timeout, self._head_timed_out)
        self._waiting[self] = None

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
            self._waiting.pop(self, None)

    def _evict_slowest(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none waits."""
        victim = next(iter(self._waiting), None)
        if victim is None:
            return False
        victim._disarm()
        logger.debug("connection closed to make room", extra={"event": "http.evicted"})
        victim.transport.abort()
        return True

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self._waiting.pop(self, None)
        if not self.transport.is_closing():
            logger.debug("request headers not received in time", extra={"event": "http.header_timeout"})
            # abort, not close: a TLS close waits up to 30 s for the peer's close_notify, and a client
            # this slow would not send it either.
            self.transport.abort()

    def _refuse_too_large(self) -> None:
        self._disarm()
        logger.debug("request headers too large", extra={"event": "http.header_too_large"})
        self.transport.write(_TOO_LARGE)
        self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``limits``."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "_waiting": {}})


class _ServingLoop(asyncio.SelectorEventLoop):
    def __init__(self, handshake_timeout_s: float) -> None:
        super().__init__()
        self._handshake_timeout_s = handshake_timeout_s

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        # uvicorn passes no handshake timeout, and asyncio's default is 60 s.
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self._handshake_timeout_s)
        return await super().create_server(*args, **kwargs)


def serving_loop(limits: ConnectionLimits, *, use_uvloop: bool = False) -> asyncio.AbstractEventLoop:
    """The event loop to serve on (``asyncio.Runner(loop_factory=...)``): its TLS servers give up on a
    handshake not done within ``header_timeout_s``, as Go's net/http does. Until then a connection holds
    asyncio's TLS buffer (256 KiB) and is no connection to the protocol, so the cap cannot count it.

    ``use_uvloop``: uvloop's loop (TLS and the transports in C) where installed, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 - optional: uvicorn[standard] installs it where it builds
        except ImportError:
            return _ServingLoop(limits.header_timeout_s)
        return _uvloop_serving_loop(uvloop.Loop, limits.header_timeout_s)
    return _ServingLoop(limits.header_timeout_s)


def _uvloop_serving_loop(base: type[Any], handshake_timeout_s: float) -> asyncio.AbstractEventLoop:
    class UvloopServingLoop(base):  # type: ignore[misc]
        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", handshake_timeout_s)
            return await super().create_server(*args, **kwargs)  # type: ignore[no-any-return]

    loop: asyncio.AbstractEventLoop = UvloopServingLoop()
    return loop
