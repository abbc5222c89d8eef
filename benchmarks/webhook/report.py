"""The table and the JSON: medians over rounds, the throughput ratio, the goals, the machine."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn

from benchmarks.webhook.common import uvloop
from benchmarks.webhook.load import Measurement, Plan


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
