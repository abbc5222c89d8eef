"""`kgm simulate --sharing mig` with the MIG planner: layouts follow the demand, nothing held is
destroyed, and a re-laid-out GPU offers nothing until its reconfiguration time has passed."""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inventory.domain.cluster_file import parse_cluster
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.mig_candidates import describe
from inventory.domain.mig_plan import PlanSettings
from inventory.domain.model import ClusterInventory, NodeName
from inventory.live.static import cache_of
from kgm.sim.cli import run_simulate
from kgm.sim.mig_layouts import SimLayouts
from kgm.sim.production import run_mig
from kgm.sim.trace import TracePod

SHARE = TracePod(name="share", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=400)  # 32 GB: 3g.40gb
SMALL = TracePod(name="small", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=100)  # 8 GB: 1g.10gb
WHOLE = TracePod(name="whole", cpu_milli=1000, memory_mib=1024, num_gpu=1, gpu_milli=1000)
THREE_G = "nvidia.com/mig-3g.40gb"
ONE_G = "nvidia.com/mig-1g.10gb"


def _cluster(*gpus: Mapping[str, Any], nodes: int = 1) -> ClusterInventory:
    return parse_cluster({"nodes": [{"name": f"n{i}", "gpus": list(gpus)} for i in range(nodes)]})


def _free(layouts_cache: Any, node: str, resource: str) -> int:
    state = layouts_cache.snapshot().states[NodeName(node)]
    return int(state.shape.free(resource))


@pytest.mark.parametrize(
    ("planner", "placed", "mig_pods", "unallocated_at_130"),
    [
        # No GPU is carved: each 32 GB pod keeps a whole GPU, the rest find no room.
        ("off", 2, 0, 0.0),
        # The planner carves both GPUs into 2 x 3g.40gb: four pods, 1 of 7 slices left on each.
        ("apply", 4, 7, 100 / 7),
    ],
)
def test_shares_no_gpu_is_carved_for_get_their_layout_from_the_planner(
    planner: str, placed: int, mig_pods: int, unallocated_at_130: float
) -> None:
    cluster = _cluster({"model": "H100-80GB", "count": 2})
    run = run_mig(cluster, [SHARE], policy="fragmentation", seed=1, planner=planner)
    assert run.placed == placed
    assert run.mig_pods == mig_pods
    assert run.unallocated_pct[130] == pytest.approx(unallocated_at_130)
    assert run.placed + sum(run.refused.values()) == run.arrived


def test_mig_is_turned_off_for_whole_gpu_demand() -> None:
    cluster = _cluster({"model": "H100-80GB", "count": 4, "mig": ["1g.10gb"] * 7})
    static = run_mig(cluster, [WHOLE], policy="binpack", seed=2, planner="off")
    planned = run_mig(cluster, [WHOLE], policy="binpack", seed=2, planner="apply")
    assert static.placed == 0 and static.idle_mig_pct == pytest.approx(100.0)
    assert planned.placed == 4 and planned.mig_gpus == 0
    assert planned.unallocated_pct[130] == 0.0


@pytest.mark.parametrize(
    ("reconfigure_s", "placed_at_least", "placed_at_most"),
    [(0.0, 4, 4), (60.0, 4, 4), (1e9, 0, 0)],
)
def test_a_relaid_gpu_offers_nothing_until_its_reconfiguration_is_done(
    reconfigure_s: float, placed_at_least: int, placed_at_most: int
) -> None:
    cluster = _cluster({"model": "H100-80GB", "count": 2})
    run = run_mig(cluster, [SHARE], policy="spread", seed=3, planner="apply", reconfigure_s=reconfigure_s)
    assert placed_at_least <= run.placed <= placed_at_most
    if reconfigure_s > 1e6:  # the layouts never come: every pod waited in vain
        assert all("waited" in reason or "still waiting" in reason for reason in run.refused)


def test_a_held_instance_survives_a_change_and_the_node_is_pending_meanwhile() -> None:
    cluster = _cluster({"model": "H100-80GB", "count": 1, "mig": ["1g.10gb"] * 7})
    cache = cache_of(cluster)
    layouts = SimLayouts(
        cluster,
        cache,
        settings=PlanSettings(min_seconds_between_changes=0.0),
        reconfigure_s=60.0,
        heartbeat=datetime(2026, 1, 1, tzinfo=UTC),
    )
    cache.apply_pod(
        "ADDED",
        {
            "metadata": {"name": "p", "namespace": "sim", "uid": "u1"},
            "spec": {
                "nodeName": "n0",
                "containers": [
                    {"name": "c", "resources": {"limits": {ONE_G: "1"}, "requests": {ONE_G: "1"}}}
                ],
            },
            "status": {"phase": "Running"},
        },
    )
    layouts.bound("n0", {ONE_G: 1})  # the device plugin gives it the instance at slice 0

    plan = layouts.plan(100.0, {THREE_G: 1})
    (change,) = plan.changes
    assert "3g.40gb" in describe(change.after)
    assert ("1g.10gb", 0) in {(i.profile.name, i.start) for i in change.after or ()}
    assert "n0" in change.reason
    snapshot = cache.snapshot().states[NodeName("n0")].shape
    assert snapshot.mig_blocked is not None  # MIG manager pending: no new MIG pod lands meanwhile
    assert snapshot.free(THREE_G) == 0

    layouts.finish(159.0)
    assert cache.snapshot().states[NodeName("n0")].shape.free(THREE_G) == 0
    layouts.finish(160.0)
    shape = cache.snapshot().states[NodeName("n0")].shape
    assert shape.mig_blocked is None
    assert shape.free(THREE_G) >= 1
    assert shape.total(ONE_G) - shape.free(ONE_G) == 1  # the held instance is still there, still held


def test_a_whole_gpu_in_use_is_never_relaid() -> None:
    cluster = _cluster({"model": "H100-80GB", "count": 1})
    cache = cache_of(cluster)
    layouts = SimLayouts(
        cluster,
        cache,
        settings=PlanSettings(),
        reconfigure_s=60.0,
        heartbeat=datetime(2026, 1, 1, tzinfo=UTC),
    )
    layouts.bound("n0", {FULL_GPU_RESOURCE: 1})
    plan = layouts.plan(0.0, {THREE_G: 5})
    assert not plan.changes
    assert layouts.changes == 0


def _args(tmp_path: Path, **overrides: object) -> argparse.Namespace:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "nodes:\n  - name: a\n    gpus: [{model: H100-80GB, count: 4, mig: [3g.40gb, 3g.40gb]}]\n"
    )
    values: dict[str, object] = {
        "seeds": "1",
        "sharing": "mig",
        "nodes": None,
        "pods": None,
        "cluster": str(cluster),
        "policy": "fragmentation",
        "report": None,
        "plot": None,
        "mig_planner": None,
        "mig_reconfigure_seconds": None,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    ("planner", "rows"),
    [(None, ["fragmentation static", "fragmentation planned"]), ("off", ["fragmentation static"])],
)
def test_the_summary_prints_the_static_figure_beside_the_planned_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], planner: str | None, rows: list[str]
) -> None:
    report = tmp_path / "report.json"
    assert run_simulate(_args(tmp_path, mig_planner=planner, report=report)) == 0
    out = capsys.readouterr().out
    printed = [" ".join(line.split()[:2]) for line in out.splitlines() if line.startswith("fragmentation")]
    assert printed == rows
    assert ("static -> planned" in out) == (planner is None)
    policies = json.loads(report.read_text())["policies"]
    assert [p["layouts"] for p in policies.values()] == [row.split()[1] for row in reversed(rows)]
    if planner is None:  # what the planner did, in its own words, and where the GPUs ended up
        assert policies["fragmentation"]["first_changes"]
        assert all("unmet demand" in reason for reason in policies["fragmentation"]["first_changes"])
        assert sum(policies["fragmentation"]["final_layouts"].values()) == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"sharing": "fraction", "mig_planner": "apply"},
        {"sharing": "fraction", "mig_reconfigure_seconds": 30.0},
        {"mig_reconfigure_seconds": -1.0},
    ],
)
def test_planner_flags_are_refused_where_they_mean_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, object]
) -> None:
    assert run_simulate(_args(tmp_path, **overrides)) == 2
    assert "--mig-" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_through_many_rounds_no_held_instance_is_ever_lost(seed: int) -> None:
    """Pods take whatever the nodes report free, the planner re-lays GPUs out for shifting demand:
    every instance a pod holds is still there, at its place, after every round."""
    rng = random.Random(seed)
    cluster = _cluster(
        {"model": "H100-80GB", "count": 2},
        {"model": "H100-80GB", "count": 2, "mig": ["1g.10gb"] * 7},
        {"model": "H100-80GB", "count": 2, "mig": ["3g.40gb", "2g.20gb", "1g.20gb"]},
        nodes=2,
    )
    cache = cache_of(cluster)
    settings = PlanSettings(min_seconds_between_changes=120.0, horizon_gpus=2.0)
    layouts = SimLayouts(
        cluster, cache, settings=settings, reconfigure_s=60.0, heartbeat=datetime(2026, 1, 1, tzinfo=UTC)
    )
    resources = [FULL_GPU_RESOURCE, ONE_G, THREE_G, "nvidia.com/mig-1g.20gb", "nvidia.com/mig-2g.20gb"]
    held: list[tuple[str, str]] = []
    for minute in range(60):
        now_s = 60.0 * minute
        layouts.finish(now_s)
        wanted = rng.choice(resources)
        free = [n for n in ("n0", "n1") if _free(cache, n, wanted) > 0]
        if free and rng.random() < 0.5:
            node = rng.choice(free)
            uid = f"p{minute}"
            limits = {wanted: "1"}
            pod = {"name": "c", "resources": {"limits": limits, "requests": limits}}
            cache.apply_pod(
                "ADDED",
                {
                    "metadata": {"name": uid, "namespace": "sim", "uid": uid},
                    "spec": {"nodeName": node, "containers": [pod]},
                    "status": {"phase": "Running"},
                },
            )
            layouts.bound(node, {wanted: 1})
            held.append((node, wanted))
        layouts.requested({wanted: 1})
        layouts.plan(now_s, {rng.choice(resources): rng.randint(0, 2)})
        for node in ("n0", "n1"):
            shape = cache.snapshot().states[NodeName(node)].shape
            for resource in resources:
                taken = sum(1 for n, r in held if (n, r) == (node, resource))
                assert shape.total(resource) >= taken, (minute, node, resource)
    assert layouts.changes > 0
