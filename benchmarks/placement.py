"""Placement benchmark: the FGD paper's protocol on Alibaba's cluster-trace-gpu-v2023.

    .venv/bin/python -m benchmarks.placement [--seeds 42-51] [--trace default] [--policies a,b]
    .venv/bin/python -m benchmarks.placement --variants [--seeds 42-51]
    .venv/bin/python -m benchmarks.placement --mig [--seeds 42-51] [--traces default,gpushare40]

Default mode: every policy on one trace; prints the unallocated GPU % at 100 % arrived workload (median
over seeds) next to the published number (Fig. 7 of Weng et al., ATC'23) and the time per run.
``--variants``: ``fragmentation`` vs ``fgd`` on the gpushare / multigpu / gpuspec / cpu traces.
``--mig``: the production path (``kgm simulate --sharing mig``: webhook, extender, reconciler) on
the built-in cluster, per trace variant and production policy: unallocated GPU % at 100 % arrived
with the cluster file's static MIG layouts and with the MIG planner's, the idle MIG % at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.placement_mig import MIG_TRACES, run_mig_table
from kgm.sim.fgd import POLICIES, run_protocol
from kgm.sim.report import PUBLISHED_UNALLOCATED_AT_100
from kgm.sim.trace import TraceNode, TracePod, load_nodes, load_pods

TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces" / "alibaba-gpu-v2023"
NODES_FILE = "openb_node_list_gpu_node.csv"
VARIANTS = (
    "gpushare40", "gpushare80", "gpushare100",
    "multigpu20", "multigpu50",
    "gpuspec20", "gpuspec33",
    "cpu050", "cpu250",
)  # fmt: skip

_NODES: list[TraceNode] = []
_PODS: dict[str, list[TracePod]] = {}


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def _run(job: tuple[str, str, int]) -> tuple[str, str, int, float, float]:
    trace, policy, seed = job
    if not _NODES:
        _NODES.extend(load_nodes(TRACE_DIR / NODES_FILE))
    if trace not in _PODS:
        _PODS[trace] = load_pods(TRACE_DIR / f"openb_pod_list_{trace}.csv")
    curve = run_protocol(_NODES, _PODS[trace], policy=policy, seed=seed)
    return trace, policy, seed, curve.at(100)[0], curve.elapsed_s


def _run_all(
    jobs: list[tuple[str, str, int]], workers: int
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n, (trace, policy, _seed, unalloc, elapsed) in enumerate(pool.map(_run, jobs), start=1):
            out.setdefault((trace, policy), []).append((unalloc, elapsed))
            print(f"\r{n}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--trace", default="default", help="pod list suffix: default, gpushare40, ...")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--variants", action="store_true", help="fragmentation vs fgd on the variant traces")
    ap.add_argument("--mig", action="store_true", help="the production path: static vs planned MIG layouts")
    ap.add_argument("--traces", default=",".join(MIG_TRACES), help="with --mig: pod list suffixes")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    if args.mig:
        traces = [t for t in args.traces.split(",") if t]
        policies = [p for p in args.policies.split(",") if p] if args.policies != ",".join(POLICIES) else None
        print(run_mig_table(TRACE_DIR, traces, seeds, policies=policies, workers=args.workers))
    elif args.variants:
        jobs = [(t, p, s) for t in VARIANTS for p in ("fgd", "fragmentation") for s in seeds]
        res = _run_all(jobs, args.workers)
        print(f"unallocated GPU % at 100% arrived, median over seeds {args.seeds}")
        print(f"{'trace':<14}{'fgd':>8}{'frag':>8}{'frag-fgd':>9}  fragmentation better")
        for t in VARIANTS:
            f = statistics.median(u for u, _ in res[(t, "fgd")])
            k = statistics.median(u for u, _ in res[(t, "fragmentation")])
            print(f"{t:<14}{f:>8.2f}{k:>8.2f}{k - f:>+9.2f}  {'yes' if k < f else 'NO'}")
    else:
        policies = [p for p in args.policies.split(",") if p]
        jobs = [(args.trace, p, s) for p in policies for s in seeds]
        res = _run_all(jobs, args.workers)
        print(f"trace {args.trace}, seeds {args.seeds}: unallocated GPU % at 100% arrived (median)")
        print(f"{'policy':<16}{'ours':>8}{'paper':>8}{'diff':>8}{'s/run':>8}")
        for p in policies:
            ours = statistics.median(u for u, _ in res[(args.trace, p)])
            per_run = statistics.median(e for _, e in res[(args.trace, p)])
            paper = PUBLISHED_UNALLOCATED_AT_100.get(p) if args.trace == "default" else None
            pub = f"{paper:.2f}" if paper is not None else "-"
            diff = f"{ours - paper:+.2f}" if paper is not None else "-"
            print(f"{p:<16}{ours:>8.2f}{pub:>8}{diff:>8}{per_run:>8.1f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
