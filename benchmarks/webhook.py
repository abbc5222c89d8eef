"""Throughput and latency of ``POST /mutate`` next to a no-op endpoint on the same HTTPS server.

The server is a subprocess assembled like ``kgm serve`` (``kgm.server.build_app`` over the demo
inventory, uvicorn, one worker, TLS from ``ReloadingTLS``), plus ``POST /noop``: it reads the same
body and answers a fixed allow, so ``noop`` is the floor (TLS, HTTP parsing, routing, body read) and
the gap between the two rows is what admission itself costs.

Run from the repository root: ``.venv/bin/python -m benchmarks.webhook`` (``--help`` for the flags).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # `python benchmarks/webhook.py` puts benchmarks/ first on sys.path, where this very file would
    # shadow the `webhook` package the server imports; the repository root is what belongs there.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import base64
import contextlib
import copy
import http.client
import logging
import math
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from kgm.certs import make_self_signed_files
from kgm.logs import JsonFormatter, configure_logging
from kgm.server import build_app
from kgm.tls import ReloadingTLS
from webhook.settings import WebhookSettings

try:
    import uvloop
except ImportError:  # the benchmark still runs on the stdlib loop, just with a slower client
    uvloop = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
FIXTURE = Path("k8s", "admissionreview-pod-create.json")
# The copy under tests/data (the repository keeps the fixtures the tests read).
FIXTURE_CANDIDATES = (REPO / "tests" / "data" / FIXTURE,)
GPU_ANNOTATIONS = {"gpu.kgm.io/memory-gb": "18", "gpu.kgm.io/workload-type": "Inference"}
GPU_RESOURCES = {
    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
}
NOOP_BODY = orjson.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "x", "allowed": True},
    }
)
# Same headers as the webhook's own answers, so both responses cost the same to write and parse.
NOOP_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(NOOP_BODY)).encode())]
# Open loop: enough connections that a few slow answers do not hold back the schedule.
OPEN_LOOP_CONNECTIONS = 32
WARMUP_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3
# An open-loop request still unanswered this long after the schedule ends counts as an error.
DRAIN_TIMEOUT_SECONDS = 10.0


class BenchmarkError(Exception):
    """The server could not be started or answered wrongly: the numbers would mean nothing."""


# --------------------------------------------------------------------------------------------------
# Server side (runs in the subprocess)
# --------------------------------------------------------------------------------------------------


class NoopEndpoint:
    """``POST /noop``: read the whole body, answer a fixed allow. A plain ASGI class like MutateEndpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more_body = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": NOOP_HEADERS})
        await send({"type": "http.response.body", "body": NOOP_BODY})


def add_noop_route(app: Starlette) -> None:
    # Chosen: /noop goes into the production app's own router (same Starlette object, same
    # middleware stack), right after /mutate, rather than into a wrapping dispatcher that would skip
    # Starlette for one path only. Routes match in order, so /mutate is untouched and /noop pays one
    # extra failed path match (well under a microsecond against tens per request): if anything, that
    # nudges the mutate/noop ratio up by a fraction of a percent.
    app.router.routes.insert(1, Route("/noop", NoopEndpoint(), methods=["POST"]))


def _log_warnings_to_stderr() -> None:
    # Info lines (one per mutation) go to /dev/null, but a failed start must be explainable: warnings
    # and errors also reach stderr, which the parent shows when the server does not come up.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def run_server(port: int, tls_dir: Path, server_loop: str) -> None:
    """Serve the production app plus /noop on HOST:port until terminated or orphaned."""
    # Production writes a JSON line per mutation at info level; writing it to /dev/null keeps that
    # cost (formatting and the write) in the measurement without flooding the terminal.
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", stream=devnull)
    _log_warnings_to_stderr()
    offer = offer_of(load_cluster("demo"))
    app = build_app(offer=lambda: offer, webhook=WebhookSettings(), registry=CollectorRegistry())
    add_noop_route(app)
    cert, key = make_self_signed_files(tls_dir)
    tls = ReloadingTLS(cert_file=cert, key_file=key, logger=logging.getLogger("kgm.tls"))
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        ssl_context_factory=lambda config, default: tls.context,
        log_config=None,
        access_log=False,
        log_level="warning",
    )
    run_on_loop(_serve(uvicorn.Server(config), tls, os.getppid()), server_loop)


async def _serve(server: uvicorn.Server, tls: ReloadingTLS, parent_pid: int) -> None:
    # As kgm.server._serve: the certificate watcher runs beside the server, as in production.
    tasks = [
        asyncio.create_task(tls.watch(10.0)),
        asyncio.create_task(_exit_when_orphaned(server, parent_pid)),
    ]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _exit_when_orphaned(server: uvicorn.Server, parent_pid: int) -> None:
    # If the benchmark is killed outright (SIGKILL skips its cleanup), the server must not linger.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    server.should_exit = True


def run_on_loop(coroutine: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        if uvloop is None:
            raise BenchmarkError("--server-loop uvloop needs uvloop installed")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    else:
        asyncio.run(coroutine)


# --------------------------------------------------------------------------------------------------
# Payload
# --------------------------------------------------------------------------------------------------


def load_review() -> tuple[dict[str, Any], str]:
    """The real Pod CREATE fixture from tests/data when present, else the embedded copy of it."""
    for path in FIXTURE_CANDIDATES:
        if path.is_file():
            return orjson.loads(path.read_bytes()), str(path)
    return copy.deepcopy(EMBEDDED_REVIEW), "embedded copy of the pod-create fixture"


def gpu_review_body(review: dict[str, Any]) -> bytes:
    """The review with its first container asking for one GPU, sized so that it moves to MIG."""
    pod = review["request"]["object"]
    metadata = pod.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **GPU_ANNOTATIONS}
    pod["spec"]["containers"][0]["resources"] = copy.deepcopy(GPU_RESOURCES)
    # Compact, as the API server sends it.
    return orjson.dumps(review)


def check_mutated(body: bytes) -> None:
    """Abort unless /mutate answered an allow with a patch that moves the pod to a MIG profile."""
    try:
        response = orjson.loads(body).get("response") or {}
        patch = orjson.loads(base64.b64decode(response.get("patch") or ""))
    except (ValueError, AttributeError) as error:
        raise BenchmarkError(f"/mutate answered something unexpected ({error}): {body[:400]!r}") from error
    paths = [op.get("path", "") for op in patch if isinstance(op, dict)] if isinstance(patch, list) else []
    if response.get("allowed") is not True or not any("nvidia.com~1mig-" in path for path in paths):
        raise BenchmarkError(f"/mutate did not move the GPU pod to a MIG profile: {body[:400]!r}")


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------


def http_request(path: str, body: bytes) -> bytes:
    """The bytes of one POST, headers as kube-apiserver sends them to a webhook."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "User-Agent: kube-apiserver-admission\r\n"
        "Accept: application/json, */*\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _content_length(head: bytes) -> tuple[int, int]:
    """(status, content length) of a response head; raises BenchmarkError on anything else."""
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
        raise BenchmarkError(f"bad status line {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(status_line[1]), int(value.strip())
    # Keep-alive load generation relies on framed answers; a chunked one would be a server change.
    raise BenchmarkError(f"response without content-length: {head!r}")


class Connection:
    """One keep-alive HTTPS connection carrying one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname=HOST)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send `request`, return (status, body). Connection errors propagate: the run is void."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length = _content_length(head)
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        # A TLS close waits for the peer's close_notify; never let that stall the benchmark.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


@contextlib.asynccontextmanager
async def connections(port: int, context: ssl.SSLContext, count: int) -> AsyncIterator[list[Connection]]:
    """`count` fresh connections, opened (TLS handshakes done) before the caller measures anything.

    Fresh per measurement because uvicorn drops connections idle for 5 s (its keep-alive timeout).
    """
    opened = await asyncio.gather(*(Connection.open(port, context) for _ in range(count)))
    try:
        yield opened
    finally:
        await asyncio.gather(*(connection.close() for connection in opened))


@dataclass(slots=True)
class Sample:
    """What one load phase saw, before any statistics."""

    latencies: list[float]  # seconds
    errors: int  # non-200 answers, plus unanswered ones in the open loop
    seconds: float  # elapsed, from the first send to the last answer
    send_lags: list[float] | None = None  # open loop: how late the client sent versus the schedule


@dataclass(frozen=True, slots=True)
class Measurement:
    endpoint: str
    phase: str
    round: int
    completed: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    # Open loop only: the client's lateness, which is part of the latency measured from the schedule.
    send_lag_p50_ms: float | None = None

    @classmethod
    def of(cls, endpoint: str, phase: str, round_no: int, sample: Sample) -> Measurement:
        latencies = sorted(sample.latencies)
        lags = None if sample.send_lags is None else sorted(sample.send_lags)
        return cls(
            endpoint=endpoint,
            phase=phase,
            round=round_no,
            completed=len(latencies),
            errors=sample.errors,
            seconds=sample.seconds,
            rate=len(latencies) / sample.seconds if sample.seconds > 0 else 0.0,
            p50_ms=percentile(latencies, 50) * 1e3,
            p99_ms=percentile(latencies, 99) * 1e3,
            max_ms=(latencies[-1] if latencies else float("nan")) * 1e3,
            send_lag_p50_ms=None if lags is None else percentile(lags, 50) * 1e3,
        )


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile: a latency some request really had, never an interpolation."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * percent / 100))
    return sorted_values[rank - 1]


async def closed_loop(pool: Sequence[Connection], request: bytes, duration: float) -> Sample:
    """Every connection sends its next request as soon as the previous answer is in."""
    sample = Sample(latencies=[], errors=0, seconds=0.0)
    start = time.perf_counter()
    deadline = start + duration

    async def worker(connection: Connection) -> None:
        while (sent := time.perf_counter()) < deadline:
            status, _ = await connection.exchange(request)
            sample.latencies.append(time.perf_counter() - sent)
            sample.errors += status != 200

    await asyncio.gather(*(worker(connection) for connection in pool))
    sample.seconds = time.perf_counter() - start
    return sample


async def open_loop(pool: Sequence[Connection], request: bytes, rate: float, duration: float) -> Sample:
    """Requests leave at fixed intervals whatever the server does; latency counts from the scheduled
    time, so a request queued behind a slow one is charged for the wait (no coordinated omission)."""
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in pool:
        free.put_nowait(connection)
    lags: list[float] = []
    sample = Sample(latencies=[], errors=0, seconds=0.0, send_lags=lags)
    last_answer = 0.0

    async def one(scheduled: float) -> None:
        nonlocal last_answer
        connection = await free.get()
        lags.append(time.perf_counter() - scheduled)
        status, _ = await connection.exchange(request)
        free.put_nowait(connection)
        last_answer = time.perf_counter()
        sample.latencies.append(last_answer - scheduled)
        sample.errors += status != 200

    start = time.perf_counter()
    tasks = []
    for index in range(round(rate * duration)):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_SECONDS)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()  # a broken connection voids the run rather than hiding in the numbers
    sample.errors += len(pending)
    sample.seconds = max(last_answer - start, duration)
    return sample


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    request: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    port: int
    context: ssl.SSLContext
    targets: tuple[Target, ...]
    duration: float
    concurrency: int
    rate: float
    rounds: int

    @property
    def closed_phase(self) -> str:
        return f"closed c={self.concurrency}"

    @property
    def open_phase(self) -> str:
        return f"open {self.rate:g}/s"


async def verify(plan: Plan) -> None:
    """One request per endpoint: /noop must answer 200 and /mutate must really mutate the pod."""
    async with connections(plan.port, plan.context, 1) as (connection,):
        for target in plan.targets:
            status, body = await connection.exchange(target.request)
            if status != 200:
                raise BenchmarkError(f"/{target.name} answered HTTP {status}: {body[:400]!r}")
            if target.name == "mutate":
                check_mutated(body)


async def measure_closed(plan: Plan, target: Target, round_no: int, duration: float) -> Measurement:
    async with connections(plan.port, plan.context, plan.concurrency) as pool:
        sample = await closed_loop(pool, target.request, duration)
    return Measurement.of(target.name, plan.closed_phase, round_no, sample)


async def measure_open(plan: Plan, target: Target, round_no: int) -> Measurement:
    async with connections(plan.port, plan.context, max(OPEN_LOOP_CONNECTIONS, plan.concurrency)) as pool:
        sample = await open_loop(pool, target.request, plan.rate, plan.duration)
    return Measurement.of(target.name, plan.open_phase, round_no, sample)


def _round_order(targets: tuple[Target, ...], round_no: int) -> tuple[Target, ...]:
    # ABBA: reversing the order every other round stops whichever endpoint runs second from getting
    # a systematic edge (warmer caches) or handicap (a hotter, throttled CPU).
    return targets if round_no % 2 == 0 else targets[::-1]


def _progress(measurement: Measurement) -> None:
    print(
        f"  round {measurement.round + 1} {measurement.endpoint:<6} {measurement.phase:<12} "
        f"{measurement.rate:8.1f} req/s  p50 {measurement.p50_ms:6.2f} ms  p99 {measurement.p99_ms:6.2f} ms",
        file=sys.stderr,
        flush=True,
    )


async def run_rounds(plan: Plan) -> list[Measurement]:
    await verify(plan)
    for target in plan.targets:  # not recorded: first-call costs and CPU frequency settle here
        await measure_closed(plan, target, -1, WARMUP_SECONDS)
    results: list[Measurement] = []
    for round_no in range(plan.rounds):
        order = _round_order(plan.targets, round_no)
        for target in order:
            results.append(await measure_closed(plan, target, round_no, plan.duration))
            _progress(results[-1])
        for target in order:
            results.append(await measure_open(plan, target, round_no))
            _progress(results[-1])
    return results


# --------------------------------------------------------------------------------------------------
# Server process management (parent side)
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    # Another process may take the port between this close and the server's bind: start() retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def client_context(ca_file: Path) -> ssl.SSLContext:
    # Verifies the server certificate against the throwaway CA, as the API server does with caBundle.
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


def _healthy(port: int, context: ssl.SSLContext) -> bool:
    connection = http.client.HTTPSConnection(HOST, port, context=context, timeout=2.0)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn shuts down gracefully on SIGTERM
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerProcess:
    """The benchmark server subprocess; always stopped on leaving the `with` block."""

    def __init__(self, workdir: Path, server_loop: str) -> None:
        self._workdir = workdir
        self._server_loop = server_loop
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.context: ssl.SSLContext | None = None

    def __enter__(self) -> ServerProcess:
        try:
            for attempt in range(START_ATTEMPTS):
                if self._start(attempt):
                    return self
        except BaseException:
            self.__exit__()
            raise
        raise BenchmarkError(f"the server did not start in {START_ATTEMPTS} attempts")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            stop(self._process)
            self._process = None

    def _start(self, attempt: int) -> bool:
        tls_dir = self._workdir / f"tls-{attempt}"
        tls_dir.mkdir()
        log_path = self._workdir / f"server-{attempt}.log"
        self.port = free_port()
        command = [sys.executable, "-m", "benchmarks.webhook", "--serve-port", str(self.port)]
        command += ["--tls-dir", str(tls_dir), "--server-loop", self._server_loop]
        with log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches only the benchmark, which then stops the server
            # itself, instead of both tearing down at once mid-request.
            self._process = subprocess.Popen(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.context = self._wait_ready(tls_dir / "ca.crt")
        if self.context is not None:
            return True
        stop(self._process)
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"server attempt {attempt + 1} on port {self.port} failed:\n{tail}", file=sys.stderr)
        return False

    def _wait_ready(self, ca_file: Path) -> ssl.SSLContext | None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            # tls.key is written last: once it exists the CA is complete and can be trusted.
            if (ca_file.parent / "tls.key").exists():
                context = client_context(ca_file)
                if _healthy(self.port, context):
                    return context
            time.sleep(0.05)
        return None


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    endpoint: str
    phase: str
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    send_lag_p50_ms: float | None


def summarise(results: Sequence[Measurement], endpoint: str, phase: str) -> Summary:
    """Median over rounds of each number (robust to one disturbed round); max is the worst seen."""
    rows = [m for m in results if m.endpoint == endpoint and m.phase == phase]
    lags = [m.send_lag_p50_ms for m in rows if m.send_lag_p50_ms is not None]
    return Summary(
        endpoint=endpoint,
        phase=phase,
        rate=statistics.median(m.rate for m in rows),
        p50_ms=statistics.median(m.p50_ms for m in rows),
        p99_ms=statistics.median(m.p99_ms for m in rows),
        max_ms=max(m.max_ms for m in rows),
        errors=sum(m.errors for m in rows),
        send_lag_p50_ms=statistics.median(lags) if lags else None,
    )


def throughput_ratio(results: Sequence[Measurement], phase: str) -> float:
    """Median of per-round mutate/noop ratios: each pairs two runs seconds apart, so slow
    drift of the machine cancels out within a pair."""
    by_round: dict[int, dict[str, float]] = {}
    for m in results:
        if m.phase == phase:
            by_round.setdefault(m.round, {})[m.endpoint] = m.rate
    return statistics.median(pair["mutate"] / pair["noop"] for pair in by_round.values())


def machine_info(server_loop: str) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn": uvicorn.__version__,
        "client_loop": "uvloop" if uvloop is not None else "asyncio",
        "server_loop": server_loop,
    }


def _met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def report(plan: Plan, results: Sequence[Measurement], info: dict[str, Any]) -> dict[str, Any]:
    """Print the table; return everything as one JSON-ready dict."""
    summaries = [
        summarise(results, target.name, phase)
        for phase in (plan.closed_phase, plan.open_phase)
        for target in plan.targets
    ]
    print(
        f"{'endpoint':<9} {'phase':<13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}"
    )
    for s in summaries:
        print(
            f"{s.endpoint:<9} {s.phase:<13} {s.rate:8.1f} {s.p50_ms:8.2f} {s.p99_ms:8.2f} "
            f"{s.max_ms:8.2f} {s.errors:7d}"
        )
    ratio = throughput_ratio(results, plan.closed_phase)
    mutate_open = next(s for s in summaries if s.endpoint == "mutate" and s.phase == plan.open_phase)
    print(f"ratio mutate/noop throughput: {ratio:.2f}   (goal >= 0.80: {_met(ratio >= 0.80)})")
    print(
        f"mutate p99 at {plan.rate:g} req/s: {mutate_open.p99_ms:.2f} ms   "
        f"(goal < 10 ms: {_met(mutate_open.p99_ms < 10)})"
    )
    lag = mutate_open.send_lag_p50_ms or 0.0
    print(f"open-loop latency counts from the scheduled send; it includes client send lag (p50 {lag:.2f} ms)")
    print(
        f"machine: {info['cpus']} CPUs ({info['cpus_usable']} usable), Python {info['python']}, "
        f"uvicorn {info['uvicorn']}, client loop {info['client_loop']}, server loop {info['server_loop']}; "
        f"{plan.rounds} rounds x {plan.duration:g} s, medians over rounds"
    )
    return {
        "machine": info,
        "settings": {"duration_s": plan.duration, "concurrency": plan.concurrency, "rate": plan.rate},
        "summary": [asdict(s) for s in summaries],
        "goals": {
            "throughput_ratio": ratio,
            "throughput_ratio_goal": 0.80,
            "mutate_open_p99_ms": mutate_open.p99_ms,
            "mutate_open_p99_goal_ms": 10.0,
        },
        "rounds": [asdict(m) for m in results],
    }


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections (default 16)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint and phase (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--server-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the server; asyncio is what `kgm serve` runs today (asyncio.run)",
    )
    # Internal: the parent starts the server subprocess through these.
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("duration", "concurrency", "rate", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    return args


def _client_runner() -> asyncio.Runner:
    # uvloop makes the client cheaper, leaving more of a small machine's CPU to the server.
    return asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop is not None else None)


def benchmark(args: argparse.Namespace) -> int:
    review, source = load_review()
    body = gpu_review_body(review)
    targets = (Target("noop", http_request("/noop", body)), Target("mutate", http_request("/mutate", body)))
    info = machine_info(args.server_loop)
    minutes = (args.rounds * 4 * args.duration + 2 * WARMUP_SECONDS) / 60
    print(f"payload: {source}, {len(body)} bytes; about {minutes:.1f} min of load", file=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="kgm-bench-") as scratch,
        ServerProcess(Path(scratch), args.server_loop) as server,
    ):
        assert server.context is not None
        plan = Plan(
            port=server.port,
            context=server.context,
            targets=targets,
            duration=args.duration,
            concurrency=args.concurrency,
            rate=args.rate,
            rounds=args.rounds,
        )
        with _client_runner() as runner:
            results = runner.run(run_rounds(plan))
    summary = report(plan, results, info)
    if args.json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_port is not None:
        run_server(args.serve_port, args.tls_dir, args.server_loop)
        return 0
    # SIGTERM's default action would skip the cleanup that stops the server; handled like Ctrl-C
    # instead, it unwinds the event loop and every `with` block in order.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return benchmark(args)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        print(f"benchmark failed: the server dropped or broke a connection: {error!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130


# A copy of shared/fixtures/k8s/admissionreview-pod-create.json (a Job's pod as kube-apiserver sends
# it, managedFields included), so the benchmark runs without ../shared and with a body of the same size.
EMBEDDED_REVIEW: dict[str, Any] = {
    "kind": "AdmissionReview",
    "apiVersion": "admission.k8s.io/v1",
    "request": {
        "uid": "d6a4f0b2-7c1e-4e39-8f52-0a9b6c3d2e1f",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ml-training",
        "operation": "CREATE",
        "userInfo": {
            "username": "system:serviceaccount:kube-system:job-controller",
            "uid": "b1f4e2c3-5d6a-4b7c-8e9f-0a1b2c3d4e5f",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["JTI=5e2f7c1a-9b3d-4e8f-a6c0-2d4b6f8a0c1e"]
            },
        },
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "generateName": "llama3-finetune-",
                "namespace": "ml-training",
                "labels": {
                    "app.kubernetes.io/name": "llama3-finetune",
                    "batch.kubernetes.io/controller-uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                    "batch.kubernetes.io/job-name": "llama3-finetune",
                    "controller-uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                    "job-name": "llama3-finetune",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "llama3-finetune",
                        "uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "managedFields": [
                    {
                        "manager": "kube-controller-manager",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": "2025-06-12T09:14:03Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {
                                "f:finalizers": {".": {}, 'v:"batch.kubernetes.io/job-tracking"': {}},
                                "f:generateName": {},
                                "f:labels": {
                                    ".": {},
                                    "f:app.kubernetes.io/name": {},
                                    "f:batch.kubernetes.io/controller-uid": {},
                                    "f:batch.kubernetes.io/job-name": {},
                                    "f:controller-uid": {},
                                    "f:job-name": {},
                                },
                                "f:ownerReferences": {
                                    ".": {},
                                    'k:{"uid":"8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f"}': {},
                                },
                            },
                            "f:spec": {
                                "f:containers": {
                                    'k:{"name":"trainer"}': {
                                        ".": {},
                                        "f:args": {},
                                        "f:command": {},
                                        "f:env": {
                                            ".": {},
                                            'k:{"name":"HF_HOME"}': {".": {}, "f:name": {}, "f:value": {}},
                                            'k:{"name":"NCCL_DEBUG"}': {".": {}, "f:name": {}, "f:value": {}},
                                        },
                                        "f:image": {},
                                        "f:imagePullPolicy": {},
                                        "f:name": {},
                                        "f:resources": {
                                            ".": {},
                                            "f:limits": {
                                                ".": {},
                                                "f:cpu": {},
                                                "f:memory": {},
                                                "f:nvidia.com/gpu": {},
                                            },
                                            "f:requests": {
                                                ".": {},
                                                "f:cpu": {},
                                                "f:memory": {},
                                                "f:nvidia.com/gpu": {},
                                            },
                                        },
                                        "f:terminationMessagePath": {},
                                        "f:terminationMessagePolicy": {},
                                        "f:volumeMounts": {
                                            ".": {},
                                            'k:{"mountPath":"/dev/shm"}': {
                                                ".": {},
                                                "f:mountPath": {},
                                                "f:name": {},
                                            },
                                        },
                                    }
                                },
                                "f:dnsPolicy": {},
                                "f:enableServiceLinks": {},
                                "f:restartPolicy": {},
                                "f:schedulerName": {},
                                "f:securityContext": {},
                                "f:terminationGracePeriodSeconds": {},
                                "f:tolerations": {},
                                "f:volumes": {
                                    ".": {},
                                    'k:{"name":"dshm"}': {
                                        ".": {},
                                        "f:emptyDir": {".": {}, "f:medium": {}, "f:sizeLimit": {}},
                                        "f:name": {},
                                    },
                                },
                            },
                        },
                    }
                ],
            },
            "spec": {
                "volumes": [
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
                    {
                        "name": "kube-api-access-5xq8z",
                        "projected": {
                            "sources": [
                                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                                {
                                    "configMap": {
                                        "name": "kube-root-ca.crt",
                                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                    }
                                },
                                {
                                    "downwardAPI": {
                                        "items": [
                                            {
                                                "path": "namespace",
                                                "fieldRef": {
                                                    "apiVersion": "v1",
                                                    "fieldPath": "metadata.namespace",
                                                },
                                            }
                                        ]
                                    }
                                },
                            ],
                            "defaultMode": 420,
                        },
                    },
                ],
                "containers": [
                    {
                        "name": "trainer",
                        "image": "nvcr.io/nvidia/pytorch:24.08-py3",
                        "command": ["torchrun"],
                        "args": [
                            "--nproc_per_node=2",
                            "train.py",
                            "--config=/workspace/configs/llama3-8b-lora.yaml",
                        ],
                        "env": [
                            {"name": "NCCL_DEBUG", "value": "WARN"},
                            {"name": "HF_HOME", "value": "/workspace/.cache/huggingface"},
                        ],
                        "resources": {
                            "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "2"},
                            "requests": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "2"},
                        },
                        "volumeMounts": [
                            {"name": "dshm", "mountPath": "/dev/shm"},
                            {
                                "name": "kube-api-access-5xq8z",
                                "readOnly": True,
                                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            },
                        ],
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "serviceAccount": "default",
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                ],
                "priority": 0,
                "enableServiceLinks": True,
                "preemptionPolicy": "PreemptLowerPriority",
            },
            "status": {},
        },
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    },
}

if __name__ == "__main__":
    sys.exit(main())
