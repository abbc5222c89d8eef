"""``python -m benchmarks.webhook``: the flags, then the server subprocesses, the rounds and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

import benchmarks.webhook
from benchmarks.webhook.common import BASELINE, STACKS, BenchmarkError, uvloop
from benchmarks.webhook.load import WARMUP_SECONDS, Plan, Server, Target, http_request, run_rounds
from benchmarks.webhook.payload import gpu_review_body, load_review, split_for_sequence
from benchmarks.webhook.process import ServerProcess
from benchmarks.webhook.report import HIT, MISS, NOOP, machine_info, report
from benchmarks.webhook.server import run_server

DEFAULT_BASELINE = Path("/tmp/kgm-base-webhook")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook",
        description=benchmarks.webhook.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections (default 16)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint and phase (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--no-open", action="store_true", help="closed loop only (no latency at --rate)")
    parser.add_argument(
        "--stacks",
        default=",".join(STACKS),
        help=f"servers of this tree, comma-separated, from: {', '.join(STACKS)} (default: all)",
    )
    parser.add_argument(
        "--baseline",
        default=str(DEFAULT_BASELINE),
        help="a checkout of an older commit to serve side by side (its own benchmark server), e.g. "
        "`git worktree add /tmp/kgm-base-webhook 09eab5b`; 'none' for none (default: "
        f"{DEFAULT_BASELINE}, when it exists)",
    )
    # Internal: the parent starts the server subprocesses through these.
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stack", choices=tuple(STACKS), default="shipped", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("duration", "concurrency", "rate", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    args.stacks = [s for s in args.stacks.split(",") if s]
    if unknown := [s for s in args.stacks if s not in STACKS]:
        parser.error(f"unknown stacks: {', '.join(unknown)}")
    return args


def _client_runner() -> asyncio.Runner:
    # uvloop makes the client cheaper, leaving more of a small machine's CPU to the server.
    return asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop is not None else None)


def targets() -> tuple[tuple[Target, ...], str, int]:
    review, source = load_review()
    before, after = split_for_sequence(review)
    body = before + b"000000000" + after
    assert len(body) > len(gpu_review_body(review))
    head_and_before = http_request("/mutate", body)[: -len(b"000000000" + after)]
    return (
        (
            Target(NOOP, http_request("/noop", body)),
            Target(HIT, http_request("/mutate", body)),  # the same pod template every time
            Target(MISS, head_and_before, after, varying=True),  # a label the decision reads, new each time
        ),
        source,
        len(body),
    )


def benchmark(args: argparse.Namespace) -> int:
    plan_targets, source, size = targets()
    baseline = None if args.baseline == "none" else Path(args.baseline)
    if baseline is not None and not (baseline / "benchmarks" / "webhook").is_dir():
        if args.baseline != str(DEFAULT_BASELINE):
            raise BenchmarkError(f"--baseline {baseline} is not a checkout with benchmarks/webhook/")
        baseline = None
    stacks = [*([BASELINE] if baseline is not None else []), *args.stacks]
    phases = 2 if not args.no_open else 1
    # Each measurement also opens and closes its connections (TLS handshakes, close_notify): ~1.5 s.
    minutes = len(stacks) * 3 * (args.rounds * phases * (args.duration + 1.5) + WARMUP_SECONDS + 1.5) / 60
    print(
        f"payload: {source}, {size} bytes; {', '.join(stacks)}; about {minutes:.1f} min of load",
        file=sys.stderr,
    )
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="kgm-bench-") as scratch, contextlib.ExitStack() as running:
        processes = [
            running.enter_context(
                ServerProcess(Path(scratch), stack, baseline if stack == BASELINE and baseline else None)
            )
            for stack in stacks
        ]
        servers = []
        for process in processes:
            assert process.context is not None
            servers.append(Server(process.stack, process.port, process.context, process.cpu_seconds))
        before = {p.stack: p.rss_bytes() for p in processes}
        plan = Plan(
            servers=tuple(servers),
            targets=plan_targets,
            duration=args.duration,
            concurrency=args.concurrency,
            rate=args.rate,
            rounds=args.rounds,
            open_loop=not args.no_open,
        )
        with _client_runner() as runner:
            results = runner.run(run_rounds(plan))
        memory = {p.stack: (before[p.stack], p.rss_bytes()) for p in processes}
    summary = report(plan, results, info, memory)
    if args.json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_port is not None:
        run_server(args.serve_port, args.tls_dir, args.stack)
        return 0
    # SIGTERM's default action would skip the cleanup that stops the servers; handled like Ctrl-C
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
        print("interrupted; the servers were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
