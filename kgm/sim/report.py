"""Report of a simulation campaign: JSON document, summary table and a hand-written SVG plot.

Report schema (``build_report``)::

    {
      "schema": "kgm.sim.fgd/v1",
      "trace": {"nodes": <path>, "pods": <path>, "nodes_count": int, "pods_count": int,
                "gpu_capacity_milli": int},
      "seeds": [int, ...],
      "protocol": {"inflation": 1.3, "step_pct": 1, "arrivals": "shuffled trace + resampled pods",
                   "departures": false, "retries": false,
                   "typical_workload": "top pod types covering 95% of the trace, CPU pods included"},
      "sharing": {"gpu_milli": 1000, "share_pods": "num_gpu == 1 and gpu_milli < 1000 on one GPU"},
      "elapsed_s": float,
      "policies": {
        "<policy>": {
          "unallocated_gpu_pct": {"0": float, ..., "130": float},   # median over seeds
          "fragmentation_pct":   {"0": float, ..., "130": float},   # median over seeds
          "unallocated_gpu_pct_at_100": {"median": float, "min": float, "max": float},
          "pods_failed_median": float,
          "runs": [{"seed": int, "unallocated_at_100": float, "elapsed_s": float}, ...]
        }, ...
      }
    }

Keys of the per-percent maps are strings (JSON object keys), the arrived-workload percent.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kgm.sim.fgd import POLICIES, Curve, run_protocol
from kgm.sim.policies import POLICY_CLASSES
from kgm.sim.progress import Progress
from kgm.sim.trace import load_nodes, load_pods

__all__ = ["PUBLISHED_UNALLOCATED_AT_100", "build_report", "plot_svg", "run_fgd", "summary_table"]

SCHEMA = "kgm.sim.fgd/v1"

# Fig. 7 of Weng et al. (ATC'23): unallocated GPU % at 100 % arrived, default trace, median of 10 seeds
PUBLISHED_UNALLOCATED_AT_100: dict[str, float] = {
    "random": 13.75,
    "dot-product": 9.44,
    "gpu-clustering": 8.42,
    "gpu-packing": 8.19,
    "best-fit": 7.09,
    "fgd": 4.77,
}

CurveKey = tuple[str, int]


def _median_map(curves: Sequence[Curve], attr: str) -> dict[str, float]:
    first = curves[0]
    out: dict[str, float] = {}
    for k, pct in enumerate(first.arrived_pct):
        out[str(pct)] = round(statistics.median(getattr(c, attr)[k] for c in curves), 4)
    return out


def build_report(
    curves_by_policy_and_seed: Mapping[CurveKey, Curve],
    *,
    nodes_path: str = "",
    pods_path: str = "",
    nodes_count: int = 0,
    pods_count: int = 0,
    gpu_capacity_milli: int = 0,
    inflation: float = 1.3,
    step_pct: int = 1,
    elapsed_s: float = 0.0,
) -> dict[str, Any]:
    """The report document (schema in the module docstring) from ``{(policy, seed): Curve}``."""
    by_policy: dict[str, list[Curve]] = {}
    for (policy, _seed), curve in sorted(curves_by_policy_and_seed.items()):
        by_policy.setdefault(policy, []).append(curve)
    seeds = sorted({seed for _, seed in curves_by_policy_and_seed})
    policies: dict[str, Any] = {}
    for policy, curves in by_policy.items():
        at100 = [c.at(100)[0] for c in curves if 100 in c.arrived_pct]
        policies[policy] = {
            "unallocated_gpu_pct": _median_map(curves, "unallocated_gpu_pct"),
            "fragmentation_pct": _median_map(curves, "fragmentation_pct"),
            "unallocated_gpu_pct_at_100": (
                {"median": statistics.median(at100), "min": min(at100), "max": max(at100)} if at100 else None
            ),
            "pods_failed_median": statistics.median(c.pods_failed for c in curves),
            "runs": [
                {
                    "seed": c.seed,
                    "unallocated_at_100": c.at(100)[0] if 100 in c.arrived_pct else None,
                    "elapsed_s": round(c.elapsed_s, 3),
                }
                for c in curves
            ],
        }
    return {
        "schema": SCHEMA,
        "trace": {
            "nodes": nodes_path,
            "pods": pods_path,
            "nodes_count": nodes_count,
            "pods_count": pods_count,
            "gpu_capacity_milli": gpu_capacity_milli,
        },
        "seeds": seeds,
        "protocol": {
            "inflation": inflation,
            "step_pct": step_pct,
            "arrivals": "trace shuffled with the seed, then pods resampled with replacement until the GPU "
            "request reaches inflation x capacity",
            "departures": False,
            "retries": False,
            "typical_workload": "top pod types covering 95% of the trace (step 1), CPU pods included",
        },
        "sharing": {"gpu_milli": 1000, "share_pods": "num_gpu == 1 and gpu_milli < 1000, on one GPU"},
        "elapsed_s": round(elapsed_s, 3),
        "policies": policies,
    }


def summary_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: policy, unallocated GPU % at 100 % arrived (median, min-max), published, diff."""
    lines = [f"{'policy':<16}{'unalloc@100%':>14}{'min-max':>16}{'paper':>8}{'diff':>8}{'frag@100%':>11}"]
    # The published figures are for the whole default trace; any other workload has none to compare.
    pods = str(report.get("trace", {}).get("pods", ""))
    published = PUBLISHED_UNALLOCATED_AT_100 if pods.endswith("openb_pod_list_default.csv") else {}
    for policy, entry in report["policies"].items():
        at = entry.get("unallocated_gpu_pct_at_100")
        frag = entry["fragmentation_pct"].get("100")
        paper = published.get(policy)
        med = f"{at['median']:.2f}" if at else "-"
        rng = f"{at['min']:.2f}-{at['max']:.2f}" if at else "-"
        pub = f"{paper:.2f}" if paper is not None else "-"
        diff = f"{at['median'] - paper:+.2f}" if at and paper is not None else "-"
        fr = f"{frag:.2f}" if frag is not None else "-"
        lines.append(f"{policy:<16}{med:>14}{rng:>16}{pub:>8}{diff:>8}{fr:>11}")
    return "\n".join(lines)


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def plot_svg(report: Mapping[str, Any], *, width: int = 980, height: int = 440) -> str:
    """Unallocated GPU % vs arrived workload %: the whole run, and a zoom on 80..130 % where the
    policies part ways (on the full scale their lines overlap); one polyline per policy, a legend."""
    series: list[tuple[str, list[tuple[float, float]]]] = []
    for policy, entry in report["policies"].items():
        pts = sorted((float(k), float(v)) for k, v in entry["unallocated_gpu_pct"].items())
        series.append((policy, pts))
    xmax = max((p[-1][0] for _, p in series if p), default=130.0) or 130.0
    tail = [y for _, pts in series for x, y in pts if x >= 80]
    zoom_top = min(100.0, max(5.0, math.ceil((max(tail, default=10.0) + 2) / 5) * 5))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    panel_w = (width - 170 - 2 * 70) // 2
    out += _panel(
        series, (0.0, xmax, 0.0, 100.0), (60, 30, panel_w, height - 80), "Unallocated GPU vs arrived workload"
    )
    out += _panel(
        series,
        (80.0, xmax, 0.0, zoom_top),
        (60 + panel_w + 70, 30, panel_w, height - 80),
        "Zoom: 80% and beyond",
    )
    for i, (policy, _) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        ly, lx = 40 + 18 * i, width - 155
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 28}" y="{ly + 4}">{_esc(policy)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(
    series: list[tuple[str, list[tuple[float, float]]]],
    ranges: tuple[float, float, float, float],
    box: tuple[int, int, int, int],
    title: str,
) -> list[str]:
    """One chart: axes with ticks, grid, labels, and the series clipped to ``ranges`` (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = ranges
    left, top, pw, ph = box

    def sx(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top + ph * (1 - (y - y0) / (y1 - y0))

    clip = f"clip{left}"
    out = [
        f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>',
        f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="14">{_esc(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left + pw / 2}" y="{top + ph + 40}" text-anchor="middle">'
        "Arrived workload (% of GPU capacity)</text>",
        f'<text x="{left - 42}" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {left - 42} {top + ph / 2})">Unallocated GPU (%)</text>',
    ]
    x_step = 10 if x1 - x0 > 60 else 5
    for xt in range(math.ceil(x0), int(x1) + 1, x_step):
        x = sx(xt)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{xt}</text>')
    y_step = 10 if y1 - y0 > 40 else (5 if y1 - y0 > 15 else 1)
    for yt in range(int(y0), int(y1) + 1, y_step):
        y = sy(yt)
        out.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{yt}</text>')
    for i, (policy, pts) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts if x >= x0 - 1)
        out.append(
            f'<polyline clip-path="url(#{clip})" fill="none" stroke="{color}" stroke-width="1.8" '
            f'points="{coords}"><title>{_esc(policy)}</title></polyline>'
        )
    return out


def run_fgd(
    *,
    nodes_path: Path | str,
    pods_path: Path | str,
    policies: Sequence[str],
    seeds: Sequence[int],
    report_path: Path | None = None,
    plot_path: Path | None = None,
    progress: bool | Progress = False,
    inflation: float = 1.3,
    step_pct: int = 1,
) -> dict[str, Any]:
    """Run every (policy, seed), write the report JSON / SVG plot when asked, and return the report."""
    unknown = [p for p in policies if p not in POLICY_CLASSES]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    if not policies or not seeds:
        raise ValueError("at least one policy and one seed are needed")
    started = time.perf_counter()
    nodes = load_nodes(nodes_path)
    pods = load_pods(pods_path)
    curves: dict[CurveKey, Curve] = {}
    total = len(policies) * len(seeds)
    bar = progress if isinstance(progress, Progress) else Progress(total, enabled=progress or False)
    last = round(inflation * 100)
    for n, (policy, seed) in enumerate((p, s) for p in policies for s in seeds):

        def on_step(pct: int, n: int = n, label: str = f"{policy} seed {seed}") -> None:
            bar.update(n, pct / last, label)

        curves[(policy, seed)] = run_protocol(
            nodes, pods, policy=policy, seed=seed, inflation=inflation, step_pct=step_pct, on_step=on_step
        )
    bar.close()
    report = build_report(
        curves,
        nodes_path=str(nodes_path),
        pods_path=str(pods_path),
        nodes_count=len(nodes),
        pods_count=len(pods),
        gpu_capacity_milli=sum(n.gpu for n in nodes) * 1000,
        inflation=inflation,
        step_pct=step_pct,
        elapsed_s=time.perf_counter() - started,
    )
    if report_path is not None:
        Path(report_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if plot_path is not None:
        Path(plot_path).write_text(plot_svg(report), encoding="utf-8")
    return report
