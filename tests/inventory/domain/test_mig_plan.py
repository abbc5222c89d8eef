from __future__ import annotations

from collections import Counter

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.mig_candidates import (
    Layout,
    candidate_layouts,
    describe,
    plannable_offer,
    plannable_profiles,
)
from inventory.domain.mig_layout import MigInstance, place_instances
from inventory.domain.mig_plan import (
    GpuPlanState,
    MigDemand,
    MigPlan,
    NodePlanState,
    PlanSettings,
    plan_layouts,
)
from inventory.domain.model import ClusterInventory, GpuDevice, NodeInventory, NodeName
from inventory.domain.prices import PriceTable

CATALOGUE = builtin_catalogue()
H100 = CATALOGUE.model("H100-80GB")
THREE_G = "nvidia.com/mig-3g.40gb"
ONE_G = "nvidia.com/mig-1g.10gb"


def _layout(*placed: tuple[str, int]) -> tuple[MigInstance, ...]:
    return tuple(MigInstance(profile=H100.profile(name), start=start) for name, start in placed)


SEVEN_1G = _layout(*((("1g.10gb", s)) for s in range(7)))
TWO_3G = _layout(("3g.40gb", 0), ("3g.40gb", 4))


def _node(name: str, *gpus: tuple[Layout, frozenset[int], bool], **kwargs: object) -> NodePlanState:
    states = tuple(
        GpuPlanState(index=i, model=H100, layout=layout, held_starts=held, whole_held=whole)
        for i, (layout, held, whole) in enumerate(gpus)
    )
    return NodePlanState(name=NodeName(name), gpus=states, **kwargs)  # type: ignore[arg-type]


FREE_WHOLE = (None, frozenset[int](), False)
HELD_WHOLE = (None, frozenset[int](), True)


def _free_mig(layout: tuple[MigInstance, ...]) -> tuple[Layout, frozenset[int], bool]:
    return (layout, frozenset(), False)


def _plan(
    nodes: list[NodePlanState], demand: MigDemand, now_s: float = 10_000.0, **settings: object
) -> MigPlan:
    return plan_layouts(nodes, demand, now_s=now_s, settings=PlanSettings(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "kept"),
    [
        ("H100-80GB", ()),
        ("H100-80GB", (("1g.10gb", 3),)),
        ("H100-80GB", (("3g.40gb", 4), ("1g.10gb", 0))),
        ("A100-40GB", ()),
        ("A100-80GB", (("2g.20gb", 2),)),
        ("A30-24GB", ()),
        ("H200-141GB", (("1g.35gb", 6),)),
    ],
)
def test_every_candidate_layout_is_valid_and_keeps_what_it_must(
    model: str, kept: tuple[tuple[str, int], ...]
) -> None:
    gpu = CATALOGUE.model(model)
    layouts = candidate_layouts(gpu, kept)
    assert layouts
    assert (None in layouts) == (not kept)  # MIG off is a choice only when nothing is held
    allowed = {p.name for p in plannable_profiles(gpu)} | {name for name, _ in kept}
    for layout in layouts:
        if layout is None:
            continue
        place_instances(gpu, [i.profile.name for i in layout])  # raises if NVIDIA's rules forbid it
        slices = [s for i in layout for s in i.slices]
        assert len(slices) == len(set(slices)), describe(layout)
        assert all(i.start in i.profile.placement_starts for i in layout)
        assert set(kept) <= {(i.profile.name, i.start) for i in layout}
        assert {i.profile.name for i in layout} <= allowed


@pytest.mark.parametrize(
    ("model", "absent"),
    [
        ("H100-80GB", {"7g.80gb", "1g.10gb+me"}),
        ("A100-40GB", {"7g.40gb", "1g.5gb+me"}),
        ("A30-24GB", {"1g.6gb+me"}),
    ],
)
def test_the_planner_creates_neither_media_nor_full_size_profiles(model: str, absent: set[str]) -> None:
    names = {p.name for p in plannable_profiles(CATALOGUE.model(model))}
    assert names and not names & absent


def test_the_offer_with_planning_on_has_profiles_no_gpu_is_carved_into_yet() -> None:
    node = NodeInventory(name=NodeName("n"), gpus=(GpuDevice(index=0, model=H100),))
    cluster = ClusterInventory(nodes=(node,), catalogue=CATALOGUE, prices=PriceTable(hourly={}))
    offered = {r.resource_name for r in plannable_offer(cluster).resources}
    assert {FULL_GPU_RESOURCE, THREE_G, ONE_G, "nvidia.com/mig-1g.20gb"} <= offered
    assert "nvidia.com/mig-7g.80gb" not in offered


@pytest.mark.parametrize(
    ("nodes", "demand", "expected"),
    [
        pytest.param(
            [_node("a", FREE_WHOLE, FREE_WHOLE)],
            MigDemand(waiting={THREE_G: 2}),
            {THREE_G},
            id="waiting-3g-carves-a-whole-gpu",
        ),
        pytest.param(
            [_node("a", _free_mig(SEVEN_1G), _free_mig(SEVEN_1G))],
            MigDemand(waiting={FULL_GPU_RESOURCE: 1}, recent={FULL_GPU_RESOURCE: 50, THREE_G: 1}),
            {FULL_GPU_RESOURCE},
            id="whole-gpu-demand-turns-mig-off",
        ),
        pytest.param(
            [_node("a", HELD_WHOLE, _free_mig(SEVEN_1G))],
            MigDemand(recent={FULL_GPU_RESOURCE: 10}),
            {FULL_GPU_RESOURCE},
            id="mix-alone-turns-mig-off",
        ),
        pytest.param(
            [_node("a", (SEVEN_1G, frozenset({2}), False))],
            MigDemand(waiting={THREE_G: 1}),
            {THREE_G},
            id="carves-around-a-held-instance",
        ),
    ],
)
def test_the_plan_offers_what_is_wanted(
    nodes: list[NodePlanState], demand: MigDemand, expected: set[str]
) -> None:
    plan = _plan(nodes, demand)
    assert plan.changes, plan.summary
    offered = Counter[str]()
    for change in plan.changes:
        if change.after is None:
            offered[FULL_GPU_RESOURCE] += 1
        else:
            offered.update(i.profile.resource_name for i in change.after)
    assert expected <= set(offered)


def test_mig_off_is_chosen_when_whole_gpu_demand_dominates() -> None:
    nodes = [_node("a", *[_free_mig(TWO_3G)] * 4)]
    plan = _plan(nodes, MigDemand(waiting={FULL_GPU_RESOURCE: 4}, recent={FULL_GPU_RESOURCE: 95, THREE_G: 5}))
    assert [c.after for c in plan.changes] == [None] * 4
    assert all("MIG off" in c.reason for c in plan.changes)


@pytest.mark.parametrize(
    ("gpu", "demand"),
    [
        pytest.param((SEVEN_1G, frozenset({0, 3, 6}), False), MigDemand(waiting={THREE_G: 2}), id="held-1g"),
        pytest.param(
            (TWO_3G, frozenset({4}), False), MigDemand(waiting={FULL_GPU_RESOURCE: 3}), id="held-3g"
        ),
        pytest.param(HELD_WHOLE, MigDemand(waiting={THREE_G: 4}), id="held-whole"),
        pytest.param(
            (_layout(("4g.40gb", 0), ("1g.10gb", 4)), frozenset({4}), False),
            MigDemand(waiting={THREE_G: 1, ONE_G: 2}, recent={ONE_G: 9}),
            id="held-small-next-to-free-large",
        ),
    ],
)
def test_nothing_held_is_ever_destroyed(gpu: tuple[Layout, frozenset[int], bool], demand: MigDemand) -> None:
    node = _node("a", gpu, gpu)
    plan = _plan([node], demand)
    layout, held, whole = gpu
    for change in plan.changes:
        assert not whole
        assert layout is not None and change.after is not None
        kept = {(i.profile.name, i.start) for i in change.after}
        assert {(i.profile.name, i.start) for i in layout if i.start in held} <= kept
        assert not {i.start for i in change.destroyed} & held


@pytest.mark.parametrize(
    ("settings", "nodes_changed", "gpus_changed"),
    [
        ({"max_nodes_per_round": 1, "max_gpus_per_round": 8}, 1, 4),
        ({"max_nodes_per_round": 2, "max_gpus_per_round": 8}, 2, 8),
        ({"max_nodes_per_round": 3, "max_gpus_per_round": 3}, 1, 3),
        ({"max_nodes_per_round": 3, "max_gpus_per_round": 0}, 0, 0),
    ],
)
def test_budgets_per_round_are_honoured(
    settings: dict[str, int], nodes_changed: int, gpus_changed: int
) -> None:
    nodes = [_node(name, *[_free_mig(SEVEN_1G)] * 4) for name in ("a", "b", "c")]
    plan = _plan(nodes, MigDemand(waiting={FULL_GPU_RESOURCE: 12}), **settings)
    assert len({c.node for c in plan.changes}) == nodes_changed
    assert len(plan.changes) == gpus_changed


@pytest.mark.parametrize(
    ("node_kwargs", "now_s", "why"),
    [
        ({"last_changed_s": 900.0}, 1000.0, "changed 100 s ago"),
        ({"last_changed_s": 500.0}, 1000.0, None),
        ({"mig_manager_state": "pending"}, 1000.0, "MIG manager state is pending"),
        ({"mig_manager_state": "failed"}, 1000.0, "MIG manager state is failed"),
        ({"reconfiguring": True}, 1000.0, "still being applied"),
    ],
)
def test_a_node_changed_recently_or_unsettled_is_left_alone_with_a_reason(
    node_kwargs: dict[str, object], now_s: float, why: str | None
) -> None:
    node = _node("a", _free_mig(SEVEN_1G), **node_kwargs)
    plan = _plan([node], MigDemand(waiting={FULL_GPU_RESOURCE: 1}), now_s=now_s)
    if why is None:
        assert [c.node for c in plan.changes] == ["a"]
    else:
        assert not plan.changes
        assert any(why in hold.reason for hold in plan.held_back), plan.held_back


def test_a_node_still_reconfiguring_uses_up_the_node_budget() -> None:
    busy = _node("a", _free_mig(SEVEN_1G), reconfiguring=True)
    idle = _node("b", _free_mig(SEVEN_1G))
    plan = _plan([busy, idle], MigDemand(waiting={FULL_GPU_RESOURCE: 2}), max_nodes_per_round=1)
    assert not plan.changes
    assert any("reconfiguring" in hold.reason for hold in plan.held_back)


@pytest.mark.parametrize(
    "demand",
    [
        MigDemand(waiting={THREE_G: 3}),
        MigDemand(recent={ONE_G: 5, THREE_G: 5}),
        MigDemand(waiting={FULL_GPU_RESOURCE: 3}),
    ],
)
def test_every_change_says_why(demand: MigDemand) -> None:
    nodes = [_node("a", FREE_WHOLE, _free_mig(SEVEN_1G)), _node("b", FREE_WHOLE, HELD_WHOLE)]
    plan = _plan(nodes, demand)
    assert plan.changes
    for change in plan.changes:
        assert change.node in change.reason and "unmet demand" in change.reason
        assert describe(change.after) in change.reason
    assert "unmet demand" in plan.summary


@pytest.mark.parametrize(
    ("demand", "horizon"),
    [
        (MigDemand(recent={THREE_G: 4}), 4.0),
        (MigDemand(waiting={THREE_G: 8}), 0.0),
        (MigDemand(waiting={THREE_G: 7}, recent={"nvidia.com/mig-unknown": 3}), 0.0),
    ],
)
def test_no_change_when_the_free_capacity_already_fits_the_demand(demand: MigDemand, horizon: float) -> None:
    nodes = [_node("a", *[_free_mig(TWO_3G)] * 4)]
    plan = _plan(nodes, demand, horizon_gpus=horizon)
    assert not plan.changes
    assert plan.summary.startswith("no change")


@pytest.mark.parametrize(
    ("surplus_weight", "layouts"),
    [
        # Idle instances cost: three GPUs go whole, the last keeps the one spare 3g.40gb allowed.
        (0.5, ["MIG off", "MIG off", "MIG off", "3g.40gb"]),
        # Without that cost, only the whole GPU wanted is made.
        (0.0, ["MIG off"]),
    ],
)
def test_free_instances_nobody_wants_go_back_to_whole_gpus(surplus_weight: float, layouts: list[str]) -> None:
    nodes = [_node("a", *[_free_mig(TWO_3G)] * 4)]
    demand = MigDemand(recent={THREE_G: 1, FULL_GPU_RESOURCE: 20})
    plan = _plan(nodes, demand, horizon_gpus=1.0, surplus_weight=surplus_weight, min_gain_gpus=0.1)
    assert [describe(c.after) for c in plan.changes] == layouts


@pytest.mark.parametrize(("waiting", "changed"), [({ONE_G: 1}, True), ({}, False)])
def test_a_waiting_pod_is_never_too_small_to_serve(waiting: dict[str, int], changed: bool) -> None:
    # One 1g.10gb is 1/7 of a GPU: below the minimum gain of a change made for the mix alone.
    nodes = [_node("a", FREE_WHOLE, FREE_WHOLE)]
    plan = _plan(nodes, MigDemand(waiting=waiting, recent={ONE_G: 1}), horizon_gpus=1 / 7, min_gain_gpus=0.3)
    assert bool(plan.changes) == changed


def test_whole_gpus_are_never_carved_while_they_are_wanted_as_whole() -> None:
    nodes = [_node("a", FREE_WHOLE, FREE_WHOLE)]
    plan = _plan(nodes, MigDemand(waiting={FULL_GPU_RESOURCE: 2, THREE_G: 1}))
    assert not plan.changes, plan.changes


@pytest.mark.parametrize("change_gpus_in_use", [True, False])
def test_gpus_in_use_are_left_alone_for_an_applier_that_recreates_every_instance(
    change_gpus_in_use: bool,
) -> None:
    in_use = (SEVEN_1G, frozenset({0}), False)
    nodes = [_node("a", in_use, _free_mig(SEVEN_1G))]
    plan = _plan(nodes, MigDemand(waiting={THREE_G: 1}), change_gpus_in_use=change_gpus_in_use)
    changed = {c.gpu for c in plan.changes}
    assert 1 in changed  # the free GPU serves the waiting pod either way
    assert (0 in changed) == change_gpus_in_use  # the one in use only gives up its idle instances if allowed
