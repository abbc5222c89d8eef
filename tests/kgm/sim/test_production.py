"""`kgm simulate --sharing mig`: the production path on an in-memory cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inventory.domain.cluster_file import parse_cluster
from kgm.sim.cli import parse_seeds
from kgm.sim.production import inflate, run_mig
from kgm.sim.trace import TracePod

SHARE = TracePod(name="share", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=400)  # 32 GB of an H100
WHOLE = TracePod(name="whole", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=1000)
EIGHT = TracePod(name="eight", cpu_milli=1000, memory_mib=1024, num_gpu=8, gpu_milli=1000)


def test_the_workload_is_shuffled_and_inflated_to_130_percent_of_capacity() -> None:
    pods = [SHARE, WHOLE, EIGHT, TracePod(name="cpu", cpu_milli=1, memory_mib=1, num_gpu=0, gpu_milli=0)]
    order = inflate(pods, 10, seed=7)
    requested = sum(p.num_gpu * p.gpu_milli / 1000 for p in order)
    assert 13 <= requested < 13 + 8  # stops as soon as 130% is reached
    assert all(p.num_gpu > 0 for p in order)  # CPU-only pods hold no GPU: left out
    assert order == inflate(pods, 10, seed=7)  # a seed gives the same workload
    assert order != inflate(pods, 10, seed=8)


def test_shares_become_mig_instances_and_whole_gpus_stay_whole() -> None:
    cluster = parse_cluster(
        {
            "nodes": [
                {
                    "name": "n",
                    "gpus": [
                        {"model": "H100-80GB", "count": 2},
                        {"model": "H100-80GB", "mig": ["3g.40gb", "3g.40gb"]},
                    ],
                }
            ]
        }
    )
    run = run_mig(cluster, [SHARE, WHOLE], policy="fragmentation", seed=1)
    assert run.mig_pods > 0  # the webhook's rule: 32 GB -> the smallest MIG instance covering it
    assert run.placed + sum(run.refused.values()) == run.arrived
    # 3 GPUs of capacity: 2 whole + 2 x 3/7 of a GPU as MIG; once both are full, the rest is refused.
    assert run.placed == 4
    assert run.unallocated_pct[130] == pytest.approx(100 - 100 * (2 + 6 / 7) / 3)
    assert run.unallocated_pct[0] == 100.0
    assert list(run.unallocated_pct.values()) == sorted(run.unallocated_pct.values(), reverse=True)
    assert run.cost_per_hour > 0  # the reconciler recorded every bound pod in the ledger


def test_a_multi_gpu_pod_needs_a_node_with_that_many_whole_gpus_free() -> None:
    cluster = parse_cluster(
        {
            "nodes": [
                {"name": "a", "gpus": [{"model": "H100-80GB", "count": 8}]},
                {"name": "b", "gpus": [{"model": "H100-80GB", "count": 4}]},
            ]
        }
    )
    run = run_mig(cluster, [EIGHT], policy="binpack", seed=3)
    assert run.placed == 1  # only node a can host it, once
    assert run.refused["no node had room"] == run.arrived - 1


@pytest.mark.parametrize(("text", "seeds"), [("42", [42]), ("42-45", [42, 43, 44, 45]), ("1,5", [1, 5])])
def test_seeds_are_read_as_a_number_a_range_or_a_list(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


def test_the_readme_command_runs_the_built_in_sample_and_writes_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "kgm.cli", "simulate", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "unalloc@100%" in run.stdout
    document = json.loads(report.read_text())
    policies = ("fragmentation", "binpack", "spread", "cost")
    # The planner is on by default: each policy's planned curve, and the static layouts' beside it.
    assert set(document["policies"]) == {*policies, *(f"{p} (static layouts)" for p in policies)}
    assert "static -> planned" in run.stdout
    curve = document["policies"]["fragmentation"]["unallocated_gpu_pct"]
    assert list(curve) == [str(p) for p in range(131)]
