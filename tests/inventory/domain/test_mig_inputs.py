"""The planner's input in `kgm serve`: GPUs as reported, what is held (by the kubelet's word or, where
it says nothing, pessimistically), and the demand read from pods."""

from __future__ import annotations

from typing import Any

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.mig_inputs import device_key, node_plan_state, pod_gpus, waiting_gpus
from inventory.domain.mig_layout import MigInstance
from inventory.domain.model import GpuDevice, NodeName
from inventory.domain.readings import DeviceAssignment
from inventory.domain.shape import shape_of

H100 = builtin_catalogue().model("H100-80GB")
ONE_G = "nvidia.com/mig-1g.10gb"
THREE_G = "nvidia.com/mig-3g.40gb"


def _mig(index: int, *placed: tuple[str, int], **more: Any) -> GpuDevice:
    instances = tuple(
        MigInstance(profile=H100.profile(name), start=start, uuid=f"MIG-{index}-{start}")
        for name, start in placed
    )
    return GpuDevice(
        index=index, model=H100, mig_enabled=True, mig_instances=instances, uuid=f"GPU-{index}", **more
    )


def _whole(index: int, **more: Any) -> GpuDevice:
    return GpuDevice(index=index, model=H100, uuid=f"GPU-{index}", **more)


def _assigned(*device_ids: str, resource: str = ONE_G) -> DeviceAssignment:
    return DeviceAssignment("ml", "p", "c", resource, tuple(device_ids))


GPUS = (
    _mig(0, ("3g.40gb", 0), ("3g.40gb", 4)),
    _mig(1, ("1g.10gb", 0), ("1g.10gb", 1)),
    _mig(2, ("1g.10gb", 0)),
    _whole(3),
    _whole(4),
)


def _held(
    gpus: tuple[GpuDevice, ...], allocated: dict[str, int], assignments: list[DeviceAssignment] | None
) -> dict[int, object]:
    shape = shape_of(gpus, allocated, None, hot_celsius=80)
    state = node_plan_state(NodeName("n"), gpus, assignments, shape)
    return {g.index: ("whole" if g.whole_held else sorted(g.held_starts)) for g in state.gpus}


@pytest.mark.parametrize(
    ("allocated", "assignments", "expected"),
    [
        pytest.param({}, [], {0: [], 1: [], 2: [], 3: [], 4: []}, id="nothing-held"),
        pytest.param(
            {ONE_G: 1}, [_assigned("MIG-1-1")], {0: [], 1: [1], 2: [], 3: [], 4: []}, id="kubelet-names-it"
        ),
        pytest.param(
            {FULL_GPU_RESOURCE: 1},
            [_assigned("GPU-4::3", resource=FULL_GPU_RESOURCE)],
            {0: [], 1: [], 2: [], 3: [], 4: "whole"},
            id="time-slicing-replica-id",
        ),
        pytest.param(
            {ONE_G: 2},
            [_assigned("MIG-1-1")],
            {0: [], 1: [0, 1], 2: [0], 3: [], 4: []},
            id="one-hold-unseen-every-1g-held",
        ),
        pytest.param(
            {FULL_GPU_RESOURCE: 1}, [], {0: [], 1: [], 2: [], 3: "whole", 4: "whole"}, id="assumed-whole-gpu"
        ),
        pytest.param(
            {THREE_G: 1}, None, {0: [0, 4], 1: [], 2: [], 3: [], 4: []}, id="no-kubelet-api-pessimistic"
        ),
        pytest.param(
            {},
            [_assigned("MIG-other-node")],
            {0: [], 1: [], 2: [], 3: [], 4: []},
            id="unknown-device-ignored",
        ),
    ],
)
def test_what_is_held_comes_from_the_kubelet_and_unseen_holds_block_their_whole_resource(
    allocated: dict[str, int], assignments: list[DeviceAssignment] | None, expected: dict[int, object]
) -> None:
    assert _held(GPUS, allocated, assignments) == expected


def test_unhealthy_gpus_and_pending_mode_changes_are_left_out_of_the_plan() -> None:
    gpus = (
        _whole(0, healthy=False, unhealthy_reason="XID 79"),
        _whole(1, mig_pending=True),
        _mig(2, ("1g.10gb", 0)),
    )
    state = node_plan_state(NodeName("n"), gpus, [], shape_of(gpus, {}, None, hot_celsius=80))
    assert [g.index for g in state.gpus] == [2]
    assert state.gpus[0].layout == gpus[2].mig_instances


def test_the_node_keeps_its_mig_manager_state_and_change_history() -> None:
    shape = shape_of(GPUS, {}, "pending", hot_celsius=80)
    state = node_plan_state(
        NodeName("n"), GPUS, [], shape, mig_state="pending", last_changed_s=12.0, reconfiguring=True
    )
    assert (state.mig_manager_state, state.last_changed_s, state.reconfiguring) == ("pending", 12.0, True)
    assert state.gpus[3].layout is None
    assert [i.start for i in state.gpus[0].layout or ()] == [0, 4]


@pytest.mark.parametrize(
    ("device_id", "key"), [("MIG-abc", "MIG-abc"), ("GPU-abc::0", "GPU-abc"), ("GPU-abc::12", "GPU-abc")]
)
def test_device_ids_name_the_device_uuid(device_id: str, key: str) -> None:
    assert device_key(device_id) == key


def _pod(
    node: str | None = None, phase: str = "Pending", reason: str | None = "Unschedulable"
) -> dict[str, Any]:
    conditions = [] if reason is None else [{"type": "PodScheduled", "status": "False", "reason": reason}]
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"limits": {THREE_G: "1"}}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": spec,
        "status": {"phase": phase, "conditions": conditions},
    }


@pytest.mark.parametrize(
    ("pod", "waiting"),
    [
        pytest.param(_pod(), {THREE_G: 1}, id="unschedulable"),
        pytest.param(_pod(reason=None), {}, id="not-tried-yet"),
        pytest.param(_pod(reason="SchedulingGated"), {}, id="gated"),
        pytest.param(_pod(node="n1"), {}, id="bound"),
        pytest.param(_pod(phase="Failed"), {}, id="finished"),
    ],
)
def test_a_pod_waits_for_its_gpus_while_the_scheduler_finds_no_node(
    pod: dict[str, Any], waiting: dict[str, int]
) -> None:
    assert waiting_gpus(pod) == waiting


def test_the_recent_mix_counts_what_a_pod_asks_for() -> None:
    assert pod_gpus(_pod()) == {THREE_G: 1}
    assert pod_gpus({"spec": {"containers": [{"name": "c"}]}}) == {}
