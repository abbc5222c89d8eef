"""Placement simulation: the FGD paper's protocol on Alibaba's GPU trace (``kgm simulate``)."""

from kgm.sim.fgd import POLICIES, Curve, run_protocol
from kgm.sim.report import build_report, plot_svg, run_fgd, summary_table
from kgm.sim.trace import TraceError, TraceNode, TracePod, load_nodes, load_pods

__all__ = [
    "POLICIES",
    "Curve",
    "TraceError",
    "TraceNode",
    "TracePod",
    "build_report",
    "load_nodes",
    "load_pods",
    "plot_svg",
    "run_fgd",
    "run_protocol",
    "summary_table",
]
