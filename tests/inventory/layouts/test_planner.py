"""The planning loop over a live cache: recommend shows and changes nothing; apply writes the config and
the labels, counts the capacity only once the MIG manager says success and the agent reports the
layout; a held instance keeps its GPU untouched; one log line and one count per new decision."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import yaml
from prometheus_client import CollectorRegistry

from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    MIG_CHANGED_AT,
    MIG_CONFIG_LABEL,
    MIG_CONFIG_STATE_LABEL,
)
from inventory.domain.mig_layout import MigInstance
from inventory.domain.mig_plan import GpuChange, MigDemand, NodeHold
from inventory.domain.model import NodeInventory, NodeName
from inventory.domain.readings import DeviceAssignment
from inventory.domain.times import parse_time
from inventory.kube import KubeUnavailableError
from inventory.layouts.applier import MigApplier
from inventory.layouts.metrics import PlanCollector, PlanMetrics
from inventory.layouts.planner import LayoutPlanner, change_class, hold_class
from inventory.layouts.settings import LayoutSettings, PlannerMode
from inventory.layouts.signals import WorkloadSignals
from inventory.live.cache import InventoryCache
from tests.inventory.layouts.support import (
    CATALOGUE,
    H100,
    ONE_G,
    THREE_G,
    MemoryMigStore,
    gpu_pod,
    gpunode,
    h100_node,
    mig_uuid,
)

NS, CM = "gpu-operator", "kgm-mig-parted-config"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """A cache, the signals and a planner over them, as `kgm serve` wires them."""

    def __init__(self, nodes: Sequence[NodeInventory], mode: PlannerMode, *, leader: bool = True) -> None:
        self.clock = Clock()
        self.generation = 1
        self.cache = InventoryCache(catalogue=CATALOGUE, clock=self.clock)
        self.cache.replace_gpunodes([gpunode(n) for n in nodes])
        self.cache.replace_nodes([])
        self.signals = WorkloadSignals()
        self.signals.replace_nodes([])
        self.store = MemoryMigStore()
        self.registry = CollectorRegistry()
        settings = LayoutSettings(mode=mode)
        applier = MigApplier(self.store, namespace=NS, configmap=CM, timeout_s=600, clock=self.clock)
        self.planner = LayoutPlanner(
            snapshot=self.cache.snapshot,
            signals=self.signals,
            settings=settings,
            metrics=PlanMetrics.register(self.registry),
            applier=applier,
            is_leader=lambda: leader,
            clock=self.clock,
        )
        self.registry.register(PlanCollector(self.planner.view))

    def pods(self, *pods: dict[str, object]) -> None:
        self.cache.replace_pods(list(pods))
        self.signals.replace_pods(list(pods))

    def labels_from_store(self, *names: str) -> None:
        objects = [self.store.node_object(n) for n in names]
        self.cache.replace_nodes(objects)
        self.signals.replace_nodes(objects)

    def heartbeat(self, node: NodeInventory) -> None:
        """The agent's next report (a node silent for 90 s is not planned on)."""
        self.generation += 1
        self.cache.apply_gpunode("MODIFIED", gpunode(node, generation=self.generation))

    def round(self) -> None:
        self.clock.now += 31  # past the snapshot's one-second reuse
        self.planner.round()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


WAITING_3G = gpu_pod("wants-3g", {THREE_G: 1}, unschedulable=True)
#: Whole-GPU pods that came and went: the recent mix wants whole GPUs too, so one GPU is carved.
FINISHED = [gpu_pod(f"done-{i}", {FULL_GPU_RESOURCE: 1}, node="b", phase="Succeeded") for i in range(1)]


def test_recommend_shows_the_change_logs_it_once_and_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    world = World([h100_node("a", None, None)], PlannerMode.RECOMMEND)
    world.pods(WAITING_3G, *FINISHED)
    with caplog.at_level(logging.INFO, logger="kgm.layouts"):
        world.round()
        world.round()
    view = world.planner.view()
    assert view.plan is not None and len(view.plan.changes) == 1
    (change,) = view.plan.changes
    assert (change.node, change.before) == ("a", None)
    assert any(i.profile.name == "3g.40gb" for i in change.after or ())
    assert not view.applies and world.store.calls == []
    lines = [r for r in caplog.records if getattr(r, "event", None) == "mig.plan"]
    assert len(lines) == 1  # the same recommendation again is not news
    assert {k: getattr(lines[0], k) for k in ("node", "gpu", "before")} == {
        "node": "a",
        "gpu": 0,
        "before": "MIG off",
    }
    assert "3g.40gb" in lines[0].after and lines[0].reason == change.reason
    assert world.sample("kgm_mig_plan_decisions_total", kind="change", reason="waiting") == 1
    assert world.sample("kgm_mig_plan_changes") == 1


def test_apply_writes_the_config_labels_the_node_and_waits_for_success_and_the_report() -> None:
    world = World([h100_node("a", None, None)], PlannerMode.APPLY)
    world.pods(WAITING_3G, *FINISHED)
    world.round()
    labels = world.store.node_labels["a"]
    assert labels[MIG_CONFIG_STATE_LABEL] == "pending"
    name = labels[MIG_CONFIG_LABEL]
    config = yaml.safe_load(world.store.configmaps[(NS, CM)]["data"]["config.yaml"])
    (entries,) = config["mig-configs"].values()
    assert list(config["mig-configs"]) == [name]
    wanted = {tuple(e["devices"]): e.get("mig-devices") for e in entries}
    assert wanted[(1,)] is None and "3g.40gb" in wanted[(0,)]
    assert world.planner.view().applying[0].config == name
    assert world.sample("kgm_mig_nodes_reconfiguring") == 1

    world.labels_from_store("a")  # the watch brings our labels: the node is held back meanwhile
    world.round()
    assert world.planner.view().plan is not None
    assert world.planner.view().plan.changes == ()  # type: ignore[union-attr]
    world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] = "success"
    world.labels_from_store("a")
    world.round()
    assert world.planner.view().applying  # success, but the agent has not reported the layout yet
    assert world.sample("kgm_mig_plan_applications_total", result="applied") is None

    profiles = [p for p, n in wanted[(0,)].items() for _ in range(n)]
    world.cache.apply_gpunode("MODIFIED", gpunode(h100_node("a", profiles, None), generation=2))
    world.round()
    assert world.planner.view().applying == ()
    assert world.sample("kgm_mig_plan_applications_total", result="applied") == 1
    capacity = world.cache.snapshot().capacity(NodeName("a"))
    assert capacity.mig_schedulable and capacity.mig_free.get(THREE_G, 0) >= 1


def test_a_gpu_with_a_held_instance_is_never_touched() -> None:
    node = h100_node("a", ["1g.10gb"] * 7)
    held = DeviceAssignment("ml", "running", "c", ONE_G, (mig_uuid("a", 0, 3),))
    world = World([node], PlannerMode.APPLY)
    world.cache.replace_gpunodes([gpunode(node, assignments=[held])])
    world.pods(gpu_pod("running", {ONE_G: 1}, node="a"), WAITING_3G)
    for _ in range(3):
        world.round()
    assert world.planner.view().plan is not None
    assert world.planner.view().plan.changes == ()  # type: ignore[union-attr]
    assert world.store.calls == []


def test_a_replica_without_the_lease_plans_but_does_not_apply() -> None:
    world = World([h100_node("a", None)], PlannerMode.APPLY, leader=False)
    world.pods(WAITING_3G)
    world.round()
    view = world.planner.view()
    assert view.plan is not None and view.plan.changes and not view.applies
    assert world.store.calls == []


def test_a_refused_write_is_counted_and_retried_next_round(caplog: pytest.LogCaptureFixture) -> None:
    world = World([h100_node("a", None)], PlannerMode.APPLY)
    world.pods(WAITING_3G)
    world.store.fail = KubeUnavailableError("503", status=503)
    with caplog.at_level(logging.ERROR, logger="kgm.layouts"):
        world.round()
    assert world.sample("kgm_mig_plan_applications_total", result="error") == 1
    assert any(getattr(r, "event", None) == "mig.apply_failed" for r in caplog.records)
    assert "a" not in world.store.node_labels
    world.store.fail = None
    world.round()
    assert world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] == "pending"


def test_a_failed_reconfiguration_ends_and_is_counted() -> None:
    world = World([h100_node("a", None)], PlannerMode.APPLY)
    world.pods(WAITING_3G)
    world.round()
    world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] = "failed"
    world.labels_from_store("a")
    world.round()
    assert world.sample("kgm_mig_plan_applications_total", result="failed") == 1
    assert world.planner.view().applying == ()
    plan = world.planner.view().plan
    assert plan is not None and plan.changes == ()  # a failed MIG manager holds the node back


def test_off_mode_never_applies_even_with_an_applier() -> None:
    world = World([h100_node("a", None)], PlannerMode.RECOMMEND)
    world.pods(WAITING_3G)
    world.round()
    assert world.store.calls == []


def _change(before: tuple[str, ...] | None, after: tuple[str, ...] | None) -> GpuChange:
    def layout(names: tuple[str, ...] | None) -> tuple[MigInstance, ...] | None:
        return None if names is None else tuple(MigInstance(H100.profile(p), s) for s, p in enumerate(names))

    return GpuChange(NodeName("a"), 0, H100.name, layout(before), layout(after), (), "r")


@pytest.mark.parametrize(
    ("change", "demand", "expected"),
    [
        (_change(None, ("3g.40gb",)), MigDemand(waiting={THREE_G: 1}), "waiting"),
        (_change(None, ("3g.40gb",)), MigDemand(recent={THREE_G: 1}), "recent-mix"),
        (_change(("3g.40gb",), None), MigDemand(waiting={FULL_GPU_RESOURCE: 1}), "waiting"),
        (_change(("3g.40gb",), ("3g.40gb", "1g.10gb")), MigDemand(waiting={THREE_G: 1}), "recent-mix"),
    ],
)
def test_a_change_is_counted_as_serving_a_waiting_pod_when_it_adds_what_one_waits_for(
    change: GpuChange, demand: MigDemand, expected: str
) -> None:
    assert change_class(change, demand) == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MIG manager state is failed: its layout cannot be trusted", "mig-manager"),
        ("a change is still being applied", "reconfiguring"),
        ("changed 12 s ago; at least 300 s between changes of one node", "too-soon"),
        ("1 node(s) still reconfiguring (at most 1)", "node-budget"),
        ("budget of 8 GPU changes per round spent", "gpu-budget"),
        ("something new", "other"),
    ],
)
def test_holds_are_counted_by_a_bounded_class_of_reason(reason: str, expected: str) -> None:
    assert hold_class(NodeHold(NodeName("a"), reason)) == expected


def test_a_change_nobody_takes_over_is_taken_back_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    world = World([h100_node("a", None)], PlannerMode.APPLY)
    world.store.node_labels["a"] = {MIG_CONFIG_LABEL: "all-disabled", MIG_CONFIG_STATE_LABEL: "success"}
    world.labels_from_store("a")
    world.pods(WAITING_3G)
    world.round()
    assert world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] == "pending"
    world.labels_from_store("a")  # no MIG manager: it stays pending
    world.clock.now += 601
    world.heartbeat(h100_node("a", None))
    with caplog.at_level(logging.ERROR, logger="kgm.layouts"):
        world.round()
    assert world.sample("kgm_mig_plan_applications_total", result="timed_out") == 1
    assert world.store.node_labels["a"] == {
        MIG_CONFIG_LABEL: "all-disabled",
        MIG_CONFIG_STATE_LABEL: "success",
    }
    assert any(getattr(r, "result", None) == "timed_out" for r in caplog.records)
    world.labels_from_store("a")
    world.clock.now += 3600
    world.heartbeat(h100_node("a", None))
    world.round()  # still recommended, never asked again: it would keep the node pending
    plan = world.planner.view().plan
    assert plan is not None and plan.changes
    assert world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] == "success"


def test_a_node_held_back_is_logged_and_counted_once_while_its_reason_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World([h100_node("a", None, None)], PlannerMode.APPLY)
    world.pods(WAITING_3G, *FINISHED)
    world.round()
    world.store.node_labels["a"][MIG_CONFIG_STATE_LABEL] = "failed"
    world.labels_from_store("a")
    with caplog.at_level(logging.INFO, logger="kgm.layouts"):
        for _ in range(3):
            world.heartbeat(h100_node("a", None, None))
            world.round()
    holds = [r for r in caplog.records if getattr(r, "decision", None) == "hold"]
    assert len(holds) == 1 and holds[0].node == "a"
    assert world.sample("kgm_mig_plan_decisions_total", kind="hold", reason="mig-manager") == 1


def test_a_new_leader_keeps_the_minimum_time_since_the_last_change_from_the_node_annotation() -> None:
    first = World([h100_node("a", None, None)], PlannerMode.APPLY)
    first.pods(WAITING_3G, *FINISHED)
    first.round()
    stamp = first.store.node_annotations["a"][MIG_CHANGED_AT]
    assert parse_time(stamp) is not None

    # Another replica takes over: the node settled, but it changed moments ago (by the annotation).
    second = World([h100_node("a", None, None)], PlannerMode.APPLY)
    second.store.node_labels["a"] = {**first.store.node_labels["a"], MIG_CONFIG_STATE_LABEL: "success"}
    second.store.node_annotations["a"] = {MIG_CHANGED_AT: stamp}
    second.labels_from_store("a")
    second.pods(WAITING_3G, *FINISHED)
    second.round()
    plan = second.planner.view().plan
    assert plan is not None and plan.changes == ()
    assert [hold_class(h) for h in plan.held_back] == ["too-soon"]
    assert second.store.calls == []
