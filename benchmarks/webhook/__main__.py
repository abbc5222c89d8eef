"""``python -m benchmarks.webhook``: the flags, then the server subprocess, the rounds and the report."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

import benchmarks.webhook
from benchmarks.webhook.common import BenchmarkError, uvloop
from benchmarks.webhook.load import WARMUP_SECONDS, Plan, Target, http_request, run_rounds
from benchmarks.webhook.payload import gpu_review_body, load_review
from benchmarks.webhook.process import ServerProcess
from benchmarks.webhook.report import machine_info, report
from benchmarks.webhook.server import run_server


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook",
        description=benchmarks.webhook.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


if __name__ == "__main__":
    sys.exit(main())
