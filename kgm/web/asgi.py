"""The bits every plain-ASGI JSON endpoint of ours needs: a bounded body read and JSON answers.

Plain ASGI rather than framework request objects on the hot paths (admission, the extender's
verbs): they must bound what they read (size, then time) before anything parses it, and answer
every failure themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.types import Receive, Scope, Send

_JSON_HEADERS = [(b"content-type", b"application/json")]


class BodyTooLargeError(Exception):
    pass


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLargeError as soon as it is known to exceed ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def error_body(status: int, message: str) -> bytes:
    """``{"error": {"code", "message"}}``: the one error shape of every HTTP API we serve."""
    return orjson.dumps({"error": {"code": status, "message": message}})


async def send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    all_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
