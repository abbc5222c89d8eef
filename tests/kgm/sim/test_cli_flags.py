"""`kgm simulate`'s flags: no flag silently ignored, Alibaba's nodes on MIG-capable GPUs, the progress bar."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from kgm.sim.alibaba_nodes import MIG_MODEL_OF, trace_cluster
from kgm.sim.cli import run_simulate
from kgm.sim.production import run_mig
from kgm.sim.progress import Progress
from kgm.sim.trace import TraceError, TraceNode, TracePod


def args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "seeds": "1",
        "sharing": None,
        "nodes": None,
        "pods": None,
        "cluster": None,
        "policy": "fragmentation",
        "report": None,
        "plot": None,
        "mig_planner": None,
        "mig_reconfigure_seconds": None,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        pytest.param(
            {"sharing": "fraction", "cluster": "c.yaml"}, "--cluster describes", id="cluster in fraction"
        ),
        pytest.param({"plot": Path("out.png")}, "ending in .svg", id="plot not svg"),
        pytest.param(
            {"sharing": "fraction", "plot": Path("o.png")}, "ending in .svg", id="plot not svg, fraction"
        ),
        pytest.param(
            {"sharing": "mig", "cluster": "c.yaml", "nodes": "n.csv"}, "give one", id="cluster and nodes"
        ),
        pytest.param(
            {"mig_planner": "off", "mig_reconfigure_seconds": 5.0}, "means nothing", id="delay, no planner"
        ),
        pytest.param({"policy": "fgd"}, "policies are", id="fraction-only policy in mig"),
    ],
)
def test_flags_that_mean_nothing_together_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], overrides: dict[str, object], says: str
) -> None:
    assert run_simulate(args(**overrides)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.count("\n") == 1 and says in captured.err and captured.err.startswith("kgm simulate: ")
    )


def test_every_alibaba_gpu_model_has_an_80_gb_mig_capable_stand_in() -> None:
    models = {"G3", "G2", "V100M32", "V100M16", "A10", "T4", "P100"}  # openb_node_list_*.csv
    assert set(MIG_MODEL_OF) == models
    nodes = [
        TraceNode("a", 96000, 786432, 8, "G2"),
        TraceNode("b", 64000, 262144, 2, "G3"),
        TraceNode("c", 8, 8, 0, ""),
    ]
    traced = trace_cluster(nodes)
    assert [(n.name, len(n.gpus), n.gpus[0].model.name) for n in traced.cluster.nodes] == [
        ("a", 8, "A100-80GB"),
        ("b", 2, "H100-80GB"),
    ]
    assert all(
        g.model.mig_capable and g.model.memory_gb == 80 and not g.mig_enabled
        for n in traced.cluster.nodes
        for g in n.gpus
    )
    assert traced.allocatable == {"a": (96000, 786432), "b": (64000, 262144)}
    assert traced.skipped == 1


def test_a_gpu_model_without_a_stand_in_is_refused_by_name() -> None:
    with pytest.raises(TraceError, match="MI250 have no MIG-capable stand-in"):
        trace_cluster([TraceNode("a", 1, 1, 8, "MI250")])


def test_alibaba_nodes_run_through_the_production_path_with_their_cpu() -> None:
    traced = trace_cluster([TraceNode("a", 24000, 10**6, 4, "G2"), TraceNode("b", 96000, 10**6, 4, "G2")])
    pods = [TracePod("share", 11000, 1024, 1, 500), TracePod("whole", 11000, 1024, 1, 1000)]
    run = run_mig(
        traced.cluster, pods, policy="fragmentation", seed=1, planner="apply", allocatable=traced.allocatable
    )
    assert run.placed > 0 and run.placed + sum(run.refused.values()) == run.arrived


def test_the_mig_cli_reads_an_alibaba_node_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,96000,786432,8,G2\nn1,96000,786432,8,G3\n")
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,8000,4096,1,1000\np1,4000,2048,1,500\n")
    assert run_simulate(args(sharing="mig", nodes=str(nodes), pods=str(pods), mig_planner="off")) == 0
    out = capsys.readouterr().out
    assert "2 nodes, 16 GPUs" in out and "A100-80GB, H100-80GB" in out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_bar_shows_only_after_a_delay_and_clears_its_line() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = Progress(4, stream=stream, enabled=True, delay_s=2.0, clock=clock)
    bar.update(0, 0.5, "fragmentation seed 1")
    assert stream.getvalue() == ""  # a short campaign prints nothing
    clock.now = 3.0
    bar.update(2, 0.0, "fragmentation seed 3")
    assert "\r[" + "#" * 15 + "." * 15 + "] 2/4 fragmentation seed 3 3 s" in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\r")


def test_no_progress_bar_when_stderr_is_not_a_terminal() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = Progress(1, stream=stream, clock=clock)  # StringIO is no terminal
    clock.now = 10.0
    bar.update(0, 0.9, "x")
    bar.close()
    assert stream.getvalue() == ""
