"""`kgm simulate`: parse the arguments, run the simulation, print the table, write report and plot."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from inventory.domain.cluster_file import load_cluster
from kgm.sim.alibaba_nodes import trace_cluster
from kgm.sim.production import POLICIES, MigRun, run_mig, summary
from kgm.sim.progress import Progress
from kgm.sim.trace import load_nodes, load_pods


def parse_seeds(text: str) -> list[int]:
    """``42``, ``42-51`` or ``1,5,9``."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            seeds.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError(f"--seeds: {text!r} is not like 42, 42-51 or 1,5,9") from None
    if not seeds:
        raise ValueError("--seeds: no seeds given")
    return seeds


def _packaged(name: str) -> str:
    return str(resources.files("kgm").joinpath(f"data/{name}"))


def refusal(args: argparse.Namespace, sharing: str) -> str | None:
    """Why these flags mean nothing together (one line), or None: no flag is silently ignored."""
    planner = getattr(args, "mig_planner", None)
    reconfigure_s = getattr(args, "mig_reconfigure_seconds", None)
    if args.plot is not None and Path(args.plot).suffix.lower() != ".svg":
        return f"--plot writes an SVG image; give a path ending in .svg, not {args.plot}"
    if sharing == "fraction":
        if planner is not None or reconfigure_s is not None:
            return "--mig-planner and --mig-reconfigure-seconds need --sharing mig"
        if args.cluster:
            return "--cluster describes a MIG cluster (--sharing mig); with --sharing fraction give --nodes"
        return None
    if args.cluster and args.nodes:
        return "--cluster and --nodes both describe the cluster; give one of them"
    if reconfigure_s is not None and reconfigure_s < 0:
        return "--mig-reconfigure-seconds must be 0 or more"
    if planner == "off" and reconfigure_s is not None:
        return "--mig-reconfigure-seconds means nothing with --mig-planner off (no GPU is re-laid out)"
    unknown = [p for p in _policies(args.policy, POLICIES) if p not in POLICIES]
    if unknown:
        return f"with --sharing mig the policies are {', '.join(POLICIES)}; not {unknown[0]}"
    return None


def _policies(name: str, known: tuple[str, ...]) -> list[str]:
    return list(known) if name == "all" else [name]


def run_simulate(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    sharing = args.sharing or ("fraction" if args.nodes else "mig")
    pods_path = args.pods or _packaged("sample-pods.csv")
    why = refusal(args, sharing)
    if why is not None:
        print(f"kgm simulate: {why}", file=sys.stderr)
        return 2
    if sharing == "fraction":
        from kgm.sim.fgd import POLICIES as FRACTION_POLICIES  # noqa: PLC0415
        from kgm.sim.report import run_fgd, summary_table  # noqa: PLC0415

        report = run_fgd(
            nodes_path=args.nodes or _packaged("sample-nodes.csv"),
            pods_path=pods_path,
            policies=_policies(args.policy, FRACTION_POLICIES),
            seeds=seeds,
            report_path=args.report,
            plot_path=args.plot,
            progress=Progress(len(_policies(args.policy, FRACTION_POLICIES)) * len(seeds)),
        )
        print(summary_table(report))
        return 0
    return _run_mig(args, pods_path, seeds)


def _run_mig(args: argparse.Namespace, pods_path: str, seeds: list[int]) -> int:
    planner = getattr(args, "mig_planner", None)
    reconfigure_s = getattr(args, "mig_reconfigure_seconds", None)
    policies = _policies(args.policy, POLICIES)
    modes = ["off"] if planner == "off" else ["off", "apply"]
    allocatable: dict[str, tuple[int, int]] = {}
    if args.nodes:
        cluster_source = str(args.nodes)
        traced = trace_cluster(load_nodes(args.nodes))
        cluster, allocatable = traced.cluster, traced.allocatable
    else:
        cluster_source = args.cluster or _packaged("sample-cluster.yaml")
        cluster = load_cluster(cluster_source)
    pods = load_pods(pods_path)
    started = time.perf_counter()
    runs: list[MigRun] = []
    bar = Progress(len(policies) * len(seeds) * len(modes))
    for policy in policies:
        for seed in seeds:
            for mode in modes:
                done, label = len(runs), f"{policy} seed {seed} {'planned' if mode == 'apply' else 'static'}"

                def on_step(pct: int, done: int = done, label: str = label) -> None:
                    bar.update(done, pct / 130, label)

                run = run_mig(
                    cluster,
                    pods,
                    policy=policy,
                    seed=seed,
                    planner=mode,
                    reconfigure_s=60.0 if reconfigure_s is None else reconfigure_s,
                    allocatable=allocatable,
                    on_step=on_step,
                )
                runs.append(run)
    bar.close()
    elapsed = time.perf_counter() - started
    gpus = sum(len(node.gpus) for node in cluster.nodes)
    models = ", ".join(sorted({g.model.name for node in cluster.nodes for g in node.gpus}))
    mapped = f"; Alibaba's GPU models simulated as {models} (kgm/sim/alibaba_nodes.py)" if args.nodes else ""
    print(
        f"kgm simulate: {len(cluster.nodes)} nodes, {gpus} GPUs ({Path(cluster_source).name}{mapped}); "
        f"{len(pods)} trace pods ({Path(pods_path).name}) inflated to 130% of capacity; sharing mig; "
        f"seeds {args.seeds}; {elapsed:.1f} s"
    )
    if "apply" in modes:
        print(
            f"MIG planner: apply, {60.0 if reconfigure_s is None else reconfigure_s:.0f} s to reconfigure "
            "a GPU; the cluster file's static layouts on the row above each policy's planned one"
        )
    print(summary(runs))
    report = mig_report(
        runs, cluster_source=cluster_source, pods_path=pods_path, seeds=seeds, elapsed=elapsed
    )
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    if args.plot:
        from kgm.sim.report import plot_svg  # noqa: PLC0415

        args.plot.write_text(plot_svg(report))
    return 0


def mig_report(
    runs: list[MigRun], *, cluster_source: str, pods_path: str, seeds: list[int], elapsed: float
) -> dict[str, Any]:
    """The report of `kgm simulate` (the same schema for both sharing modes, see kgm/sim/report.py)."""
    policies: dict[str, Any] = {}
    planned = any(run.planner == "apply" for run in runs)
    for policy in dict.fromkeys(run.policy for run in runs):
        for planner in ("apply", "off"):
            mine = [run for run in runs if run.policy == policy and run.planner == planner]
            if not mine:
                continue
            # With the planner, the policy's own name is the planned curve, the static one beside it.
            name = f"{policy} (static layouts)" if planned and planner == "off" else policy
            policies[name] = {
                "layouts": "planned" if planner == "apply" else "static",
                "unallocated_gpu_pct": {
                    str(pct): round(statistics.median(r.unallocated_pct[pct] for r in mine), 4)
                    for pct in range(131)
                },
                "arrived_pods": statistics.median(r.arrived for r in mine),
                "placed_pods": statistics.median(r.placed for r in mine),
                "refused": dict(sum((r.refused for r in mine), start=type(mine[0].refused)())),
                # team quotas of the cluster file: pods refused at admission, by quota and unit (all seeds)
                "refused_by_quota": dict(
                    sum((r.refused_by_quota for r in mine), start=type(mine[0].refused)())
                ),
                "cost_per_hour": float(statistics.median(float(r.cost_per_hour) for r in mine)),
                "idle_mig_pct": round(statistics.median(r.idle_mig_pct for r in mine), 4),
                "idle_whole_pct": round(statistics.median(r.idle_whole_pct for r in mine), 4),
                "layout_changes": statistics.median(r.layout_changes for r in mine),
                # One seed's end state and first reasons: what the planner did, in its own words.
                "final_layouts": mine[0].final_layouts,
                "first_changes": mine[0].change_reasons[:10],
            }
    return {
        "protocol": "fgd",
        "sharing": "mig",
        "cluster": cluster_source,
        "pods": pods_path,
        "seeds": seeds,
        "elapsed_s": round(elapsed, 2),
        "policies": policies,
    }
