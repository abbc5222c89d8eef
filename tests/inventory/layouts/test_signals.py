"""What the planner learns from the watches: waiting pods (while Unschedulable), the recent mix (the
last N GPU pods, each once), each node's MIG manager labels and kgm's annotation, and whether both
were listed yet."""

from __future__ import annotations

from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    MIG_CHANGED_AT,
    MIG_CONFIG_LABEL,
    MIG_CONFIG_STATE_LABEL,
)
from inventory.domain.model import NodeName
from inventory.domain.times import parse_time
from inventory.layouts.signals import MigLabels, WorkloadSignals
from tests.inventory.layouts.support import ONE_G, THREE_G, gpu_pod


def test_a_pod_waits_while_unschedulable_and_stops_when_bound_or_deleted() -> None:
    signals = WorkloadSignals()
    waiting = gpu_pod("p", {THREE_G: 2}, unschedulable=True)
    signals.replace_pods([waiting, gpu_pod("q", {THREE_G: 1}, unschedulable=True)])
    assert signals.demand().waiting == {THREE_G: 3}
    signals.apply_pod("MODIFIED", gpu_pod("p", {THREE_G: 2}, node="n1"))
    assert signals.demand().waiting == {THREE_G: 1}
    signals.apply_pod("DELETED", gpu_pod("q", {THREE_G: 1}, unschedulable=True))
    assert signals.demand().waiting == {}


def test_the_recent_mix_is_the_last_gpu_pods_each_counted_once() -> None:
    signals = WorkloadSignals(recent_pods=2)
    signals.replace_pods([])
    signals.apply_pod("ADDED", gpu_pod("a", {ONE_G: 1}))
    signals.apply_pod("MODIFIED", gpu_pod("a", {ONE_G: 1}, node="n1"))  # the same pod again
    signals.apply_pod("ADDED", gpu_pod("b", {THREE_G: 1}))
    assert signals.demand().recent == {ONE_G: 1, THREE_G: 1}
    signals.apply_pod("ADDED", gpu_pod("c", {FULL_GPU_RESOURCE: 2}))
    assert signals.demand().recent == {THREE_G: 1, FULL_GPU_RESOURCE: 2}
    signals.apply_pod("ADDED", {"metadata": {"uid": "cpu"}, "spec": {"containers": [{"name": "c"}]}})
    assert signals.demand().recent == {THREE_G: 1, FULL_GPU_RESOURCE: 2}


def test_node_labels_and_the_change_annotation_are_kept_per_node() -> None:
    signals = WorkloadSignals()
    node = {
        "metadata": {
            "name": "n1",
            "labels": {MIG_CONFIG_LABEL: "kgm-abc", MIG_CONFIG_STATE_LABEL: "pending", "other": "x"},
            "annotations": {MIG_CHANGED_AT: "2026-12-06T03:00:00Z"},
        }
    }
    signals.replace_nodes([node, {"metadata": {"name": "n2"}}])
    assert signals.labels() == {
        NodeName("n1"): MigLabels("kgm-abc", "pending", parse_time("2026-12-06T03:00:00Z")),
        NodeName("n2"): MigLabels(),
    }
    signals.apply_node(
        "MODIFIED", {"metadata": {"name": "n1", "labels": {MIG_CONFIG_STATE_LABEL: "success"}}}
    )
    signals.apply_node("DELETED", {"metadata": {"name": "n2"}})
    assert signals.labels() == {NodeName("n1"): MigLabels(None, "success")}


def test_signals_are_synced_once_pods_and_nodes_were_listed() -> None:
    signals = WorkloadSignals()
    assert not signals.synced()
    signals.replace_pods([])
    assert not signals.synced()  # a node mid-reconfiguration would look settled
    signals.replace_nodes([])
    assert signals.synced()
    assert WorkloadSignals.without_watches().synced()
