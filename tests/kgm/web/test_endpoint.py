"""The one JSON endpoint over a recording handler: edge refusals, the catch-all, metrics, log lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import Message, Scope

from kgm.web.endpoint import JsonEndpoint, LogLine, Wording

WORDING = Wording(
    not_allowed="{method} is not taken here; use {allow}",
    too_large="larger than {limit} bytes",
    too_slow="not received within {timeout} s",
)
LIMIT = 100
LOGGER = "tests.kgm.web"


@dataclass(frozen=True, slots=True)
class Said:
    status: int
    body: bytes | None
    labels: tuple[str, ...] | None
    message: str = ""
    headers: Sequence[tuple[bytes, bytes]] = ()
    timed: bool = True
    level: int = logging.INFO
    event: str = "test.answered"

    def line(self, seconds: float) -> LogLine:
        return "answered %d", (self.status,), {"event": self.event}


@dataclass
class Echo:
    """Answers POST and PUT with the body it read; ``broken`` makes answering raise; records its calls."""

    broken: bool = False
    blocking: bool = False
    refuse: bool = False
    methods: frozenset[str] = frozenset({"POST", "PUT"})
    calls: list[str] = field(default_factory=list)
    threads: list[bool] = field(default_factory=list)

    def check(self, scope: Scope) -> Said | None:
        self.calls.append("check")
        if self.refuse:
            return Said(403, None, ("refused",), "not you")
        return None

    def rejected(
        self, scope: Scope, status: int, message: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Said:
        return Said(status, None, ("rejected",), message, headers, timed=False, level=logging.WARNING)

    def parse(self, scope: Scope, body: bytes) -> bytes:
        self.calls.append("parse")
        return body

    def answer(self, call: bytes) -> Said:
        self.calls.append("answer")
        self.threads.append(_in_a_worker_thread())
        if self.broken:
            raise RuntimeError("the core exploded")
        return Said(200, orjson.dumps({"echo": call.decode()}), ("ok",))

    def failed(self, scope: Scope, call: bytes | None, error: Exception) -> tuple[Said, LogLine | None]:
        line: LogLine = ("failed", (), {"event": "test.error", "error": repr(error)})
        return Said(500, None, ("error",), "internal error", level=0), line


def _in_a_worker_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


@dataclass
class Served:
    status: int
    headers: Mapping[bytes, bytes]
    body: Any
    registry: CollectorRegistry

    def count(self, outcome: str) -> float | None:
        return self.registry.get_sample_value("test_requests_total", {"outcome": outcome})

    def timed(self) -> float | None:
        return self.registry.get_sample_value("test_duration_seconds_count")


def serve(
    handler: Echo,
    *,
    method: str = "POST",
    chunks: Sequence[bytes] = (b"{}",),
    headers: Sequence[tuple[bytes, bytes]] = (),
    slow: bool = False,
) -> Served:
    registry = CollectorRegistry()
    endpoint = JsonEndpoint(
        handler,
        wording=WORDING,
        max_body_bytes=LIMIT,
        read_timeout=0.05,
        logger=logging.getLogger(LOGGER),
        requests=Counter("test_requests", "Requests.", ["outcome"], registry=registry),
        latency=Histogram("test_duration_seconds", "Latency.", registry=registry),
    )
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if slow or not pending:
            await asyncio.sleep(3600)
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/test", "headers": list(headers), "query_string": b""}
    asyncio.run(asyncio.wait_for(endpoint(scope, receive, send), timeout=5))
    start, body = sent
    return Served(start["status"], dict(start["headers"]), orjson.loads(body["body"]), registry)


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message}}


@pytest.mark.parametrize(
    ("options", "status", "body", "outcome"),
    [
        pytest.param(
            {"method": "GET"}, 405, error(405, "GET is not taken here; use POST, PUT"), "rejected", id="405"
        ),
        pytest.param(
            {"headers": [(b"content-length", b"101")]},
            413,
            error(413, "larger than 100 bytes"),
            "rejected",
            id="413 by content-length",
        ),
        pytest.param(
            {"chunks": [b"x" * 60, b"x" * 60]},
            413,
            error(413, "larger than 100 bytes"),
            "rejected",
            id="413 streamed",
        ),
        pytest.param({"slow": True}, 408, error(408, "not received within 0.05 s"), "rejected", id="408"),
        pytest.param(
            {"chunks": [b"x" * 50, b"y" * 50]}, 200, {"echo": "x" * 50 + "y" * 50}, "ok", id="at the limit"
        ),
    ],
)
def test_the_edge_refuses_in_the_error_shape_before_the_handler_parses(
    options: dict[str, Any], status: int, body: dict[str, Any], outcome: str
) -> None:
    handler = Echo()
    served = serve(handler, **options)
    assert (served.status, served.body) == (status, body)
    assert served.headers[b"content-type"] == b"application/json"
    assert served.count(outcome) == 1
    assert ("parse" in handler.calls) is (status == 200)


def test_a_method_not_taken_gets_405_with_allow_listing_the_methods_taken() -> None:
    served = serve(Echo(), method="DELETE")
    assert (served.status, served.headers[b"allow"]) == (405, b"POST, PUT")


@pytest.mark.parametrize(
    ("method", "read"),
    [("POST", True), ("PUT", True), ("GET", False), ("DELETE", False)],
)
def test_only_methods_that_carry_a_body_wait_for_one(method: str, read: bool) -> None:
    served = serve(Echo(methods=frozenset({method})), method=method, slow=True)
    assert served.status == (408 if read else 200)


def test_a_refusal_before_the_read_never_reads_nor_parses() -> None:
    handler = Echo(refuse=True)
    served = serve(handler, slow=True)  # a body that never comes: it is not waited for
    assert (served.status, served.body) == (403, error(403, "not you"))
    assert handler.calls == ["check"]


@pytest.mark.parametrize("blocking", [False, True], ids=["on the loop", "in a thread"])
def test_an_exception_in_the_handler_is_logged_and_answered_as_the_handler_says(
    blocking: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        served = serve(Echo(broken=True, blocking=blocking))
    assert (served.status, served.body) == (500, error(500, "internal error"))
    assert "exploded" not in str(served.body)  # the cause goes to the log, not to the caller
    [record] = caplog.records
    assert (getattr(record, "event", None), record.levelno, record.exc_info is not None) == (
        "test.error",
        logging.ERROR,
        True,
    )
    assert served.count("error") == 1


@pytest.mark.parametrize("blocking", [False, True], ids=["on the loop", "in a thread"])
def test_blocking_handlers_answer_in_a_worker_thread_and_the_others_on_the_loop(blocking: bool) -> None:
    handler = Echo(blocking=blocking)
    assert serve(handler).status == 200
    assert handler.threads == [blocking]


@pytest.mark.parametrize(
    ("options", "counted", "timed"),
    [
        pytest.param({}, ("ok", 1), 1, id="answered: counted and timed"),
        pytest.param({"method": "GET"}, ("rejected", 1), 0, id="untimed refusal"),
        pytest.param({"broken": True}, ("error", 1), 1, id="failure"),
    ],
)
def test_each_answer_is_counted_by_its_labels_and_timed_when_it_says_so(
    options: dict[str, Any], counted: tuple[str, int], timed: int
) -> None:
    broken = options.pop("broken", False)
    served = serve(Echo(broken=broken), **options)
    assert served.count(counted[0]) == counted[1]
    assert served.timed() == timed


@pytest.mark.parametrize(
    ("level", "logged"),
    [(logging.DEBUG, False), (logging.INFO, True), (0, False)],
    ids=["below the logger's level", "at it", "no line"],
)
def test_an_answer_is_logged_at_its_level_and_only_built_when_the_logger_takes_it(
    level: int, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    built: list[bool] = []

    @dataclass(frozen=True, slots=True)
    class Quiet(Said):
        def line(self, seconds: float) -> LogLine:
            built.append(True)
            return "answered", (), {"event": "test.answered"}

    class Handler(Echo):
        def answer(self, call: bytes) -> Said:
            return Quiet(200, b"{}", ("ok",), level=level)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        serve(Handler())
    assert [getattr(r, "event", None) for r in caplog.records] == (["test.answered"] if logged else [])
    assert built == ([True] if logged else [])


def test_without_metrics_the_endpoint_still_answers() -> None:
    endpoint = JsonEndpoint(
        Echo(), wording=WORDING, max_body_bytes=LIMIT, read_timeout=1.0, logger=logging.getLogger(LOGGER)
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/test", "headers": []}
    asyncio.run(endpoint(scope, receive, send))
    assert sent[0]["status"] == 200
