"""`kgm simulate` with team quotas from the cluster file: pods drawn to teams, refused at admission past
their team's limit, counted by quota in the run, the table and the JSON report."""

from __future__ import annotations

import re
from typing import Any

import pytest

from inventory.domain.cluster_file import ClusterFileError, parse_cluster
from kgm.sim.cli import mig_report
from kgm.sim.production import run_mig, summary
from kgm.sim.trace import TracePod

WHOLE = TracePod(name="whole", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=1000)
SHARE = TracePod(name="share", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=400)
NODES = [{"name": "n", "gpus": [{"model": "H100-80GB", "count": 8}]}]


def cluster(*quotas: dict[str, Any]) -> Any:
    return parse_cluster({"nodes": NODES, "quotas": list(quotas)})


def test_a_team_is_refused_past_its_gpu_equivalents_and_the_rest_is_placed() -> None:
    run = run_mig(cluster({"team": "nlp", "gpuEquivalents": 3}), [WHOLE], policy="binpack", seed=1)
    assert run.placed == 3  # 8 GPUs of room, but the only team may hold 3
    assert dict(run.refused_by_quota) == {"team nlp: gpuEquivalents": run.arrived - 3}
    assert run.refused["admission: over a team quota of the cluster file"] == run.arrived - 3


def test_pods_are_drawn_to_teams_by_share_and_each_team_is_judged_on_its_own() -> None:
    quotas = cluster(
        {"team": "nlp", "share": 1, "gpuEquivalents": 2},
        {"team": "vision", "share": 3, "costPerHour": 100},  # a budget no one reaches
    )
    run = run_mig(quotas, [WHOLE], policy="binpack", seed=3)
    assert set(run.refused_by_quota) == {"team nlp: gpuEquivalents"}
    assert run.placed == 8  # vision fills what nlp may not take


def test_a_mig_share_counts_its_fraction_of_the_gpu() -> None:
    mig = parse_cluster(
        {
            "nodes": [
                {"name": "n", "gpus": [{"model": "H100-80GB", "count": 4, "mig": ["3g.40gb", "3g.40gb"]}]}
            ],
            "quotas": [{"team": "nlp", "gpuEquivalents": 1}],
        }
    )
    run = run_mig(mig, [SHARE], policy="binpack", seed=1)
    assert run.placed == 2  # two 3g.40gb are 6/7 of a GPU; a third would be 9/7
    assert sum(run.refused_by_quota.values()) == run.arrived - 2


def test_without_quotas_nothing_is_judged() -> None:
    run = run_mig(parse_cluster({"nodes": NODES}), [WHOLE], policy="binpack", seed=1)
    assert run.placed == 8
    assert not run.refused_by_quota


def test_the_table_and_the_report_count_refusals_by_quota() -> None:
    runs = [
        run_mig(cluster({"team": "nlp", "gpuEquivalents": 3}), [WHOLE], policy="binpack", seed=s)
        for s in (1, 2)
    ]
    table = summary(runs)
    assert "refused by quota (pods, median over seeds):" in table
    assert f"binpack       static   team nlp: gpuEquivalents {runs[0].arrived - 3}" in table
    report = mig_report(runs, cluster_source="c.yaml", pods_path="p.csv", seeds=[1, 2], elapsed=0.0)
    assert report["policies"]["binpack"]["refused_by_quota"] == {
        "team nlp: gpuEquivalents": sum(r.arrived - 3 for r in runs)
    }


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ([{"gpuEquivalents": 3}], "quotas[0]: 'team' must be a label value"),
        ([{"team": "nlp", "gpus": 3}], "quotas[0]: unknown keys gpus"),
        ([{"team": "nlp", "memoryGB": -1}], "quotas[0].memoryGB must be at least 0"),
        ([{"team": "nlp", "share": -1}], "quotas[0]: 'share' must be a whole number"),
        ([{"team": "nlp"}, {"team": "nlp"}], "one quota per team; repeated: nlp"),
        ("nlp", "'quotas' must be a list"),
    ],
)
def test_bad_quotas_in_a_cluster_file_name_the_entry(quotas: Any, message: str) -> None:
    with pytest.raises(ClusterFileError, match=re.escape(message)):
        parse_cluster({"nodes": NODES, "quotas": quotas})
