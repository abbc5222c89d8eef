"""Attacks on one HTTPS connection, against a real uvicorn server on loopback (issue 11, item 3):
half a request line held open, an endless header, more connections than the cap."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from kgm.certs import make_self_signed_files
from kgm.cli import _parser
from kgm.connections import serving_loop
from kgm.server import build_app, http_protocol
from kgm.settings import ConnectionLimits
from kgm.tls import ReloadingTLS
from webhook.settings import WebhookSettings

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


@dataclass(frozen=True)
class Server:
    port: int
    client_context: ssl.SSLContext

    def connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return self.client_context.wrap_socket(raw, server_hostname="localhost")


@pytest.fixture(params=[False, True], ids=["asyncio", "uvloop"])
def use_uvloop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@contextlib.contextmanager
def serving(tmp_path: Path, limits: ConnectionLimits, use_uvloop: bool = False) -> Iterator[Server]:
    """The production app and protocol (kgm serve's), served by uvicorn on a loopback port, on asyncio's
    loop or uvloop's (what kgm serve runs where uvloop is installed)."""
    cert, key = make_self_signed_files(tmp_path)
    tls = ReloadingTLS(cert_file=cert, key_file=key)
    offer = offer_of(load_cluster("demo"))
    app = build_app(offer=lambda: offer, webhook=WebhookSettings(), registry=CollectorRegistry())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        ssl_context_factory=lambda config, default: tls.context,
        http=http_protocol(limits),
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)

    def run() -> None:
        with asyncio.Runner(loop_factory=lambda: serving_loop(limits, use_uvloop=use_uvloop)) as runner:
            runner.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(250):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield Server(sock.getsockname()[1], ssl.create_default_context(cafile=tmp_path / "ca.crt"))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def read_response(conn: ssl.SSLSocket) -> bytes:
    """One whole response (headers and a content-length body), or what came before the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def closed_by_server(conn: ssl.SSLSocket, *, within: float) -> float:
    """Seconds until the server closed ``conn`` (EOF or reset); fails after ``within`` seconds."""
    start = time.monotonic()
    conn.settimeout(within)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {within} s")
    except (ConnectionError, ssl.SSLError):
        pass
    return time.monotonic() - start


def test_half_a_request_line_is_closed_at_the_header_deadline(tmp_path: Path, use_uvloop: bool) -> None:
    with (
        serving(tmp_path, ConnectionLimits(header_timeout_s=0.5), use_uvloop) as server,
        server.connect() as conn,
    ):
        conn.sendall(b"GET /heal")
        assert closed_by_server(conn, within=5) < 3


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    tmp_path: Path, use_uvloop: bool
) -> None:
    with (
        serving(tmp_path, ConnectionLimits(header_timeout_s=0.5), use_uvloop) as server,
        server.connect() as conn,
    ):
        assert closed_by_server(conn, within=5) < 3


def test_a_connection_that_never_starts_tls_is_closed_at_the_header_deadline(
    tmp_path: Path, use_uvloop: bool
) -> None:
    """Before its handshake a connection holds ~260 KiB too (asyncio's TLS buffer), for 60 s by default."""
    with (
        serving(tmp_path, ConnectionLimits(header_timeout_s=0.5), use_uvloop) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
    ):
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        start = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while raw.recv(65536):
                pass
        assert time.monotonic() - start < 3


def test_headers_dribbled_a_byte_at_a_time_are_cut_at_the_deadline(tmp_path: Path, use_uvloop: bool) -> None:
    """The deadline is for the whole head, not between bytes, and holds for the next request on a
    kept-alive connection too."""
    with (
        serving(tmp_path, ConnectionLimits(header_timeout_s=1.0), use_uvloop) as server,
        server.connect() as conn,
    ):
        conn.sendall(HEALTHZ)
        assert status(read_response(conn)) == 200
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        start = time.monotonic()
        conn.settimeout(0.05)
        with pytest.raises((ConnectionError, ssl.SSLError)):
            while time.monotonic() - start < 5:
                conn.sendall(b"a")
                with contextlib.suppress(TimeoutError):
                    if not conn.recv(1024):
                        raise ConnectionError("closed by the server")
        assert time.monotonic() - start < 4


def test_a_prompt_request_is_served_under_a_short_deadline(tmp_path: Path, use_uvloop: bool) -> None:
    with (
        serving(tmp_path, ConnectionLimits(header_timeout_s=1.0), use_uvloop) as server,
        server.connect() as conn,
    ):
        for _ in range(2):
            conn.sendall(HEALTHZ)
            assert status(read_response(conn)) == 200
            time.sleep(1.2)  # idle between requests: the keep-alive timeout's business, not the deadline's


@pytest.mark.parametrize("size", [64 * 1024 + 1, 1024 * 1024, 8 * 1024 * 1024])
def test_a_header_over_the_cap_is_answered_431(tmp_path: Path, use_uvloop: bool, size: int) -> None:
    with (
        serving(tmp_path, ConnectionLimits(max_header_bytes=64 * 1024), use_uvloop) as server,
        server.connect() as conn,
    ):
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            conn.sendall(head + b"a" * (size - len(head) - 4) + b"\r\n\r\n")
        assert status(read_response(conn)) == 431


def test_a_header_just_under_the_cap_is_served(tmp_path: Path, use_uvloop: bool) -> None:
    with (
        serving(tmp_path, ConnectionLimits(max_header_bytes=64 * 1024), use_uvloop) as server,
        server.connect() as conn,
    ):
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
        request = head + b"a" * (64 * 1024 - len(head) - 4) + b"\r\n\r\n"
        assert len(request) == 64 * 1024
        conn.sendall(request + HEALTHZ)  # and a pipelined request after it
        assert status(read_response(conn)) == 200
        assert status(read_response(conn)) == 200


def test_many_headers_over_the_cap_are_answered_431(tmp_path: Path, use_uvloop: bool) -> None:
    with (
        serving(tmp_path, ConnectionLimits(max_header_bytes=8 * 1024), use_uvloop) as server,
        server.connect() as conn,
    ):
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
        assert status(read_response(conn)) == 431


def test_a_body_is_not_counted_as_header(tmp_path: Path, use_uvloop: bool) -> None:
    with (
        serving(tmp_path, ConnectionLimits(max_header_bytes=1024), use_uvloop) as server,
        server.connect() as conn,
    ):
        body = b"{" + b" " * 200_000 + b"}"
        conn.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert status(read_response(conn)) == 400  # read whole, and refused as no AdmissionReview


def test_connections_past_the_cap_get_503_while_admitted_ones_are_served(
    tmp_path: Path, use_uvloop: bool
) -> None:
    with serving(tmp_path, ConnectionLimits(max_connections=3), use_uvloop) as server:
        admitted = [server.connect() for _ in range(3)]
        try:
            for conn in admitted:  # a whole request each: the server has surely counted them
                conn.sendall(HEALTHZ)
                assert status(read_response(conn)) == 200
            with server.connect() as extra:
                extra.sendall(HEALTHZ)
                response = read_response(extra)
                assert status(response) == 503
                assert b"connection: close" in response.lower()
                closed_by_server(extra, within=5)
            with server.connect() as extra:  # still open: the over-cap one got no request through
                extra.sendall(HEALTHZ)
                assert status(read_response(extra)) == 503
                # ... while the connections admitted before go on being served
                for conn in admitted:
                    conn.sendall(HEALTHZ)
                    assert status(read_response(conn)) == 200
        finally:
            for conn in admitted:
                conn.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the closes within a moment; then a new caller is served
            with server.connect() as conn:
                conn.sendall(HEALTHZ)
                if status(read_response(conn)) == 200:
                    break
            assert time.monotonic() < deadline, "a slot never came free"
            time.sleep(0.05)


def test_a_cap_full_of_slow_connections_still_serves_a_normal_caller(
    tmp_path: Path, use_uvloop: bool
) -> None:
    """A slow-loris flood must not lock out probes and the API server: a newcomer past the cap closes
    the connection that has waited longest for its headers, and the count never passes the cap."""
    limits = ConnectionLimits(max_connections=3, header_timeout_s=30)
    with serving(tmp_path, limits, use_uvloop) as server:
        slow = [server.connect() for _ in range(3)]
        try:
            for conn in slow:
                conn.sendall(b"GET /heal")
            time.sleep(0.2)  # the server has counted them
            for _ in range(3):
                with server.connect() as conn:
                    conn.sendall(HEALTHZ)
                    assert status(read_response(conn)) == 200
            assert closed_by_server(slow[0], within=5) < 1  # the oldest went first
        finally:
            for conn in slow:
                conn.close()


def test_slow_connections_past_the_cap_are_dropped_within_the_grace(tmp_path: Path, use_uvloop: bool) -> None:
    limits = ConnectionLimits(max_connections=2, header_timeout_s=30)
    with serving(tmp_path, limits, use_uvloop) as server:
        held = [server.connect() for _ in range(2)]
        try:
            for conn in held:
                conn.sendall(HEALTHZ)
                assert status(read_response(conn)) == 200
            with server.connect() as slow:
                slow.sendall(b"GET /heal")
                assert closed_by_server(slow, within=5) < 3
        finally:
            for conn in held:
                conn.close()


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, (10.0, 65536, 512)),
        (
            [],
            {"KGM_HEADER_TIMEOUT": "2.5", "KGM_MAX_HEADER_BYTES": "8192", "KGM_MAX_CONNECTIONS": "64"},
            (2.5, 8192, 64),
        ),
        (
            ["--header-timeout", "3", "--max-header-bytes", "1024", "--max-connections", "8"],
            {"KGM_HEADER_TIMEOUT": "2.5", "KGM_MAX_CONNECTIONS": "64"},
            (3.0, 1024, 8),
        ),
    ],
)
def test_the_limits_come_from_flags_over_the_environment(
    argv: list[str], environ: dict[str, str], expected: tuple[float, int, int]
) -> None:
    args = _parser(environ).parse_args(["serve", *argv])
    assert (args.header_timeout, args.max_header_bytes, args.max_connections) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--header-timeout", "0"],
        ["--header-timeout", "-1"],
        ["--header-timeout", "nan"],
        ["--header-timeout", "inf"],
        ["--max-header-bytes", "0"],
        ["--max-header-bytes", "1e3"],
        ["--max-connections", "-5"],
        ["--max-connections", "many"],
    ],
)
def test_a_limit_that_is_not_a_positive_number_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser({}).parse_args(["serve", *argv])
    assert exit_.value.code == 2
    assert "must be a positive finite number" in capsys.readouterr().err
