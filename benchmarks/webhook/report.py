"""The tables and the JSON: medians over rounds, CPU per request, the ratios, the goals, the machine."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn

from benchmarks.webhook.common import BASELINE, SHIPPED, uvloop
from benchmarks.webhook.load import Measurement, Plan

NOOP, HIT, MISS = "noop", "mutate hit", "mutate miss"
#: Issue 15's goals: a memo hit at most this much server CPU above the no-op of the same server...
HIT_ABOVE_NOOP_GOAL_US = 30.0
#: ... and the shipped stack's /mutate throughput at least this many times the baseline tree's.
THROUGHPUT_GOAL = 3.0


@dataclass(frozen=True, slots=True)
class Summary:
    server: str
    endpoint: str
    phase: str
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_us: float | None
    send_lag_p50_ms: float | None


def summarise(results: Sequence[Measurement], server: str, endpoint: str, phase: str) -> Summary:
    """Median over rounds of each number (robust to one disturbed round); max is the worst seen."""
    rows = [m for m in results if (m.server, m.endpoint, m.phase) == (server, endpoint, phase)]
    lags = [m.send_lag_p50_ms for m in rows if m.send_lag_p50_ms is not None]
    cpus = [m.cpu_us for m in rows if m.cpu_us is not None]
    return Summary(
        server=server,
        endpoint=endpoint,
        phase=phase,
        rate=statistics.median(m.rate for m in rows),
        p50_ms=statistics.median(m.p50_ms for m in rows),
        p99_ms=statistics.median(m.p99_ms for m in rows),
        max_ms=max(m.max_ms for m in rows),
        errors=sum(m.errors for m in rows),
        cpu_us=statistics.median(cpus) if cpus else None,
        send_lag_p50_ms=statistics.median(lags) if lags else None,
    )


def _per_round(
    results: Sequence[Measurement], phase: str, a: tuple[str, str], b: tuple[str, str], *, ratio: bool
) -> float | None:
    """Median over rounds of a/b (req/s, ``ratio``) or a - b (CPU us per request): each round pairs two
    runs seconds apart, so slow drift of the machine cancels out within a pair."""
    by_round: dict[int, dict[tuple[str, str], Measurement]] = {}
    for m in results:
        if m.phase == phase:
            by_round.setdefault(m.round, {})[(m.server, m.endpoint)] = m
    values = []
    for pair in by_round.values():
        if a in pair and b in pair:
            if ratio:
                values.append(pair[a].rate / pair[b].rate)
            elif pair[a].cpu_us is not None and pair[b].cpu_us is not None:
                values.append(pair[a].cpu_us - pair[b].cpu_us)  # type: ignore[operator]
    return statistics.median(values) if values else None


def machine_info() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn": uvicorn.__version__,
        "client_loop": "uvloop" if uvloop is not None else "asyncio",
    }


def _met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(
    plan: Plan, results: Sequence[Measurement], info: dict[str, Any], memory: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """Print the tables; return everything as one JSON-ready dict."""
    servers = [s.name for s in plan.servers]
    endpoints = [t.name for t in plan.targets]
    phases = [plan.closed_phase, *([plan.open_phase] if plan.open_loop else [])]
    summaries = [summarise(results, s, e, p) for p in phases for s in servers for e in endpoints]
    print(
        f"{'server':<18} {'endpoint':<12} {'phase':<13} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6} {'cpu us/req':>10}"
    )
    for s in summaries:
        print(
            f"{s.server:<18} {s.endpoint:<12} {s.phase:<13} {s.rate:8.0f} {s.p50_ms:7.2f} {s.p99_ms:7.2f} "
            f"{s.max_ms:7.2f} {s.errors:6d} {_num(s.cpu_us, '10.1f')}"
        )
    closed = plan.closed_phase
    print(f"\nper server, closed loop, medians of per-round pairs (server CPU per request, {closed}):")
    print(
        f"{'server':<18} {'hit-noop us':>11} {'miss-noop us':>12} {'hit/noop req/s':>14} "
        f"{'miss/noop req/s':>15} {'RSS MiB before -> after':>24}"
    )
    per_server: dict[str, dict[str, float | None]] = {}
    for server in servers:
        row = {
            "hit_above_noop_us": _per_round(results, closed, (server, HIT), (server, NOOP), ratio=False),
            "miss_above_noop_us": _per_round(results, closed, (server, MISS), (server, NOOP), ratio=False),
            "hit_noop_ratio": _per_round(results, closed, (server, HIT), (server, NOOP), ratio=True),
            "miss_noop_ratio": _per_round(results, closed, (server, MISS), (server, NOOP), ratio=True),
        }
        per_server[server] = row
        before, after = memory.get(server, (0, 0))
        print(
            f"{server:<18} {_num(row['hit_above_noop_us'], '11.1f')} "
            f"{_num(row['miss_above_noop_us'], '12.1f')} "
            f"{_num(row['hit_noop_ratio'], '14.2f')} {_num(row['miss_noop_ratio'], '15.2f')} "
            f"{before / 2**20:11.1f} -> {after / 2**20:8.1f}"
        )
    goals: dict[str, Any] = {}
    if SHIPPED in servers:
        above = per_server[SHIPPED]["hit_above_noop_us"]
        goals["hit_above_noop_us"] = above
        met = _met(above is not None and above <= HIT_ABOVE_NOOP_GOAL_US)
        print(f"\nshipped: a memo hit costs {_num(above, '.1f')} us of server CPU above the no-op ", end="")
        print(f"(goal <= {HIT_ABOVE_NOOP_GOAL_US:g}: {met})")
        if BASELINE in servers:
            speedup = _per_round(results, closed, (SHIPPED, HIT), (BASELINE, HIT), ratio=True)
            miss = summarise(results, SHIPPED, MISS, closed).cpu_us
            today = summarise(results, BASELINE, HIT, closed).cpu_us
            goals |= {
                "hit_vs_baseline_throughput": speedup,
                "miss_cpu_us": miss,
                "baseline_mutate_cpu_us": today,
            }
            print(
                f"shipped /mutate (memo hit) req/s: {_num(speedup, '.2f')} x the baseline tree's "
                f"(goal >= {THROUGHPUT_GOAL:g}: {_met(speedup is not None and speedup >= THROUGHPUT_GOAL)})"
            )
            ok = miss is not None and today is not None and miss <= today
            print(
                f"shipped memo miss: {_num(miss, '.1f')} us of server CPU per review against "
                f"{_num(today, '.1f')} for the baseline tree's /mutate (goal: no more: {_met(ok)})"
            )
    print(
        f"\nmachine: {info['cpus']} CPUs ({info['cpus_usable']} usable, load average at the start "
        f"{info['load_average'][0]:.1f}), Python {info['python']}, uvicorn {info['uvicorn']}, client loop "
        f"{info['client_loop']}; {plan.rounds} rounds x {plan.duration:g} s, servers and endpoints in "
        "alternating order, medians over rounds. The client shares the machine: compare the ratios and "
        "the CPU per request side by side, not absolute req/s across runs."
    )
    return {
        "machine": info,
        "settings": {"duration_s": plan.duration, "concurrency": plan.concurrency, "rate": plan.rate},
        "summary": [asdict(s) for s in summaries],
        "per_server": per_server,
        "memory_rss_bytes": {k: {"before": v[0], "after": v[1]} for k, v in memory.items()},
        "goals": goals,
        "rounds": [asdict(m) for m in results],
    }
