"""``python -m benchmarks.placement --mig``: static vs planned MIG layouts through the production path.

Each run is ``kgm simulate --sharing mig`` on the built-in cluster (24 nodes, 192 H100s, a third
carved with MIG): the trace's GPU pods shuffled with the seed and inflated to 130 % of capacity,
through the webhook, the extender (the pod's policy) and the reconciler. ``static``: the cluster
file's layouts throughout (``--mig-planner off``); ``planned``: the MIG planner re-lays GPUs out
after the demand (``--mig-planner apply``, 60 s to reconfigure a GPU).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

from inventory.domain.cluster_file import load_cluster
from inventory.domain.model import ClusterInventory
from kgm.sim.production import POLICIES, run_mig
from kgm.sim.trace import TracePod, load_pods

#: The default trace and the variants of the issue's report (share of GPU-sharing pods, of
#: multi-GPU pods, of pods asking for a GPU model).
MIG_TRACES = ("default", "gpushare40", "gpushare100", "multigpu20", "multigpu50", "gpuspec20", "gpuspec33")

_CLUSTER: list[ClusterInventory] = []
_PODS: dict[str, list[TracePod]] = {}

#: (trace, policy, planner, seed) -> (unallocated % at 100 %, idle MIG % at the end, GPUs re-laid out)
Job = tuple[Path, str, str, str, int]
Result = tuple[float, float, int]


def _run(job: Job) -> tuple[Job, Result]:
    trace_dir, trace, policy, planner, seed = job
    if not _CLUSTER:
        _CLUSTER.append(load_cluster(str(resources.files("kgm").joinpath("data/sample-cluster.yaml"))))
    if trace not in _PODS:
        _PODS[trace] = load_pods(trace_dir / f"openb_pod_list_{trace}.csv")
    run = run_mig(_CLUSTER[0], _PODS[trace], policy=policy, seed=seed, planner=planner)
    return job, (run.unallocated_pct[100], run.idle_mig_pct, run.layout_changes)


def run_mig_table(
    trace_dir: Path,
    traces: Sequence[str],
    seeds: Sequence[int],
    *,
    policies: Sequence[str] | None = None,
    workers: int = 2,
) -> str:
    """Every (trace, policy, layouts, seed); the table of medians over the seeds."""
    policies = list(policies or POLICIES)
    jobs = [
        (trace_dir, t, p, m, s) for t in traces for p in policies for m in ("off", "apply") for s in seeds
    ]
    results: dict[tuple[str, str, str], list[Result]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n, (job, result) in enumerate(pool.map(_run, jobs), start=1):
            results.setdefault((job[1], job[2], job[3]), []).append(result)
            print(f"\r{n}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    lines = [
        f"production path (kgm simulate --sharing mig), built-in cluster, seeds {_seeds(seeds)}: medians",
        f"{'trace':<13}{'policy':<15}{'static@100%':>12}{'planned@100%':>13}"
        f"{'idle MIG st/pl':>16}{'changes':>9}",
    ]
    for trace in traces:
        planned_at = {p: round(_median(results[(trace, p, "apply")], 0), 2) for p in policies}  # as printed
        best = {p for p, v in planned_at.items() if v == min(planned_at.values())}
        for policy in policies:
            static, planned = results[(trace, policy, "off")], results[(trace, policy, "apply")]
            idle = f"{_median(static, 1):.1f}/{_median(planned, 1):.1f}"
            mark = "  best planned" if policy in best else ""
            lines.append(
                f"{trace:<13}{policy:<15}{_median(static, 0):>11.2f}%{_median(planned, 0):>12.2f}%"
                f"{idle:>16}{_median(planned, 2):>9.0f}{mark}"
            )
    return "\n".join(lines)


def _median(results: Sequence[Result], k: int) -> float:
    return statistics.median(r[k] for r in results)


def _seeds(seeds: Sequence[int]) -> str:
    ordered = sorted(seeds)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))
