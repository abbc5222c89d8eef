"""The client: keep-alive HTTPS connections, the closed and open loops, and the rounds alternating them
over servers and endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.webhook.common import HOST, BenchmarkError
from benchmarks.webhook.payload import check_mutated

# Open loop: enough connections that a few slow answers do not hold back the schedule.
OPEN_LOOP_CONNECTIONS = 32
WARMUP_SECONDS = 1.0
# An open-loop request still unanswered this long after the schedule ends counts as an error.
DRAIN_TIMEOUT_SECONDS = 10.0


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
    server: str
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
    # Closed loop only: the server process's CPU (user + system, all threads) per answered request.
    cpu_us: float | None = None

    @classmethod
    def of(
        cls, server: str, endpoint: str, phase: str, round_no: int, sample: Sample, cpu_s: float | None = None
    ) -> Measurement:
        latencies = sorted(sample.latencies)
        lags = None if sample.send_lags is None else sorted(sample.send_lags)
        return cls(
            server=server,
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
            cpu_us=None if cpu_s is None or not latencies else cpu_s / len(latencies) * 1e6,
        )


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile: a latency some request really had, never an interpolation."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * percent / 100))
    return sorted_values[rank - 1]


async def closed_loop(pool: Sequence[Connection], request: Callable[[], bytes], duration: float) -> Sample:
    """Every connection sends its next request as soon as the previous answer is in."""
    sample = Sample(latencies=[], errors=0, seconds=0.0)
    start = time.perf_counter()
    deadline = start + duration

    async def worker(connection: Connection) -> None:
        while (sent := time.perf_counter()) < deadline:
            status, _ = await connection.exchange(request())
            sample.latencies.append(time.perf_counter() - sent)
            sample.errors += status != 200

    await asyncio.gather(*(worker(connection) for connection in pool))
    sample.seconds = time.perf_counter() - start
    return sample


async def open_loop(
    pool: Sequence[Connection], request: Callable[[], bytes], rate: float, duration: float
) -> Sample:
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
        status, _ = await connection.exchange(request())
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
    """An endpoint and the requests sent to it: always the same bytes, or (``varying``) each request
    with a fresh number in the same place, so that no two are the same to a memo (same length)."""

    name: str
    before: bytes
    after: bytes = b""
    varying: bool = False

    def requests(self) -> Callable[[], bytes]:
        if not self.varying:
            same = self.before + self.after
            return lambda: same
        numbers = itertools.count(1)
        before, after = self.before, self.after
        return lambda: b"%s%09d%s" % (before, next(numbers), after)


@dataclass(frozen=True, slots=True)
class Server:
    """A server under test, as the client sees it; ``cpu()`` its CPU seconds so far."""

    name: str
    port: int
    context: ssl.SSLContext
    cpu: Callable[[], float]


@dataclass(frozen=True, slots=True)
class Plan:
    servers: tuple[Server, ...]
    targets: tuple[Target, ...]
    duration: float
    concurrency: int
    rate: float
    rounds: int
    open_loop: bool = True

    @property
    def closed_phase(self) -> str:
        return f"closed c={self.concurrency}"

    @property
    def open_phase(self) -> str:
        return f"open {self.rate:g}/s"


async def verify(plan: Plan) -> None:
    """One request per server and endpoint: /noop must answer 200, /mutate must really mutate the pod."""
    for server in plan.servers:
        async with connections(server.port, server.context, 1) as (connection,):
            for target in plan.targets:
                status, body = await connection.exchange(target.requests()())
                if status != 200:
                    answered = f"{server.name} {target.name} answered HTTP {status}"
                    raise BenchmarkError(f"{answered}: {body[:400]!r}")
                if target.name != "noop":
                    check_mutated(body)


async def measure_closed(
    plan: Plan, server: Server, target: Target, round_no: int, duration: float
) -> Measurement:
    async with connections(server.port, server.context, plan.concurrency) as pool:
        cpu = server.cpu()  # once the connections are open: the handshakes are not the requests' cost
        sample = await closed_loop(pool, target.requests(), duration)
        cpu = server.cpu() - cpu
    return Measurement.of(server.name, target.name, plan.closed_phase, round_no, sample, cpu)


async def measure_open(plan: Plan, server: Server, target: Target, round_no: int) -> Measurement:
    count = max(OPEN_LOOP_CONNECTIONS, plan.concurrency)
    async with connections(server.port, server.context, count) as pool:
        sample = await open_loop(pool, target.requests(), plan.rate, plan.duration)
    return Measurement.of(server.name, target.name, plan.open_phase, round_no, sample)


def _round_order(items: tuple[Any, ...], round_no: int) -> tuple[Any, ...]:
    # ABBA: reversing the order every other round stops whichever runs second from getting a
    # systematic edge (warmer caches) or handicap (a hotter, throttled CPU).
    return items if round_no % 2 == 0 else items[::-1]


def _progress(m: Measurement) -> None:
    cpu = f"  cpu {m.cpu_us:6.1f} us/req" if m.cpu_us is not None else ""
    print(
        f"  round {m.round + 1} {m.server:<18} {m.endpoint:<12} {m.phase:<12} "
        f"{m.rate:8.1f} req/s  p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms{cpu}",
        file=sys.stderr,
        flush=True,
    )


async def run_rounds(plan: Plan) -> list[Measurement]:
    await verify(plan)
    for server in plan.servers:  # not recorded: first-call costs and CPU frequency settle here
        for target in plan.targets:
            await measure_closed(plan, server, target, -1, WARMUP_SECONDS)
    results: list[Measurement] = []
    for round_no in range(plan.rounds):
        for server in _round_order(plan.servers, round_no):
            order = _round_order(plan.targets, round_no)
            for target in order:
                results.append(await measure_closed(plan, server, target, round_no, plan.duration))
                _progress(results[-1])
            for target in order if plan.open_loop else ():
                results.append(await measure_open(plan, server, target, round_no))
                _progress(results[-1])
    return results
