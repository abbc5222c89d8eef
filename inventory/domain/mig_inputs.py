"""What the MIG planner is given in `kgm serve`: each node's GPUs as its agent last reported them, which
of their instances are held, and the demand read from pods (pure: plain data in, plain data out).

Which instance a pod holds is known only from the kubelet (the agent's ``allocations``: the device
IDs the device plugin handed out, MIG UUIDs or GPU UUIDs). A hold the kubelet does not show yet (a
pod bound a moment ago, an assumed bind, a reservation) or cannot show (the agent has no
PodResources API) is counted against its resource on the node as a whole: every free instance of
that resource on the node is then treated as held, and with a whole GPU every whole GPU. That can
only keep the planner from a change, never let it destroy something in use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.mig_candidates import Layout
from inventory.domain.mig_plan import GpuPlanState, NodePlanState
from inventory.domain.model import GpuDevice, NodeName
from inventory.domain.pods import TERMINAL_PHASES, container_gpus, pod_gpu_total
from inventory.domain.readings import DeviceAssignment
from inventory.domain.shape import NodeShape


def layout_of(gpu: GpuDevice) -> Layout:
    """The GPU's layout as the planner reads it: None for MIG off, else its instances by start."""
    return tuple(sorted(gpu.mig_instances, key=lambda i: i.start)) if gpu.mig_enabled else None


def device_key(device_id: str) -> str:
    """The UUID a kubelet device ID stands for (time-slicing replicas are ``<uuid>::<n>``)."""
    return device_id.split("::", 1)[0]


def node_plan_state(
    name: NodeName,
    gpus: Iterable[GpuDevice],
    assignments: Iterable[DeviceAssignment] | None,
    shape: NodeShape,
    *,
    mig_state: str | None = None,
    last_changed_s: float | None = None,
    reconfiguring: bool = False,
) -> NodePlanState:
    """One node for the planner. ``shape``: the cache's view of it (what is held, by resource, bound
    pods, assumed binds and reservations together); ``assignments``: the kubelet's, None when the
    agent cannot read them. GPUs that are unhealthy or wait for a MIG mode change are left out: the
    planner neither counts nor changes them."""
    usable = [g for g in gpus if g.healthy and not g.mig_pending]
    by_uuid: dict[str, tuple[int, int | None]] = {}
    resource_of: dict[tuple[int, int | None], str] = {}
    for gpu in usable:
        if gpu.mig_enabled:
            for instance in gpu.mig_instances:
                key = (gpu.index, instance.start)
                resource_of[key] = instance.profile.resource_name
                if instance.uuid:
                    by_uuid[instance.uuid] = key
        else:
            resource_of[(gpu.index, None)] = FULL_GPU_RESOURCE
            if gpu.uuid:
                by_uuid[gpu.uuid] = (gpu.index, None)
    held: set[tuple[int, int | None]] = set()
    for assignment in assignments or ():
        for device_id in assignment.device_ids:
            found = by_uuid.get(device_key(device_id))
            if found is not None:
                held.add(found)
    attributed = Counter(resource_of[key] for key in held)
    unattributed = {
        resource
        for resource in {*resource_of.values()}
        if shape.total(resource) - shape.free(resource) > attributed[resource]
    }
    # Pessimistic: a hold the kubelet does not show may be on any instance of its resource.
    held |= {key for key, resource in resource_of.items() if resource in unattributed}
    states = tuple(
        GpuPlanState(
            index=gpu.index,
            model=gpu.model,
            layout=layout_of(gpu),
            held_starts=frozenset(start for index, start in held if index == gpu.index and start is not None),
            whole_held=not gpu.mig_enabled and (gpu.index, None) in held,
        )
        for gpu in sorted(usable, key=lambda g: g.index)
    )
    return NodePlanState(
        name=name,
        gpus=states,
        last_changed_s=last_changed_s,
        reconfiguring=reconfiguring,
        mig_manager_state=mig_state,
    )


def pod_gpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """The GPU resources a pod asks for (the recent mix the planner shapes free capacity after)."""
    return dict(pod_gpu_total(container_gpus(pod)))


def waiting_gpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """What a pod waits for: its GPU resources while kube-scheduler has found no node for it
    (unbound, not finished, ``PodScheduled=False`` with reason ``Unschedulable``), else nothing."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("nodeName") or status.get("phase") in TERMINAL_PHASES:
        return {}
    unschedulable = any(
        isinstance(c, Mapping)
        and c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or ()
    )
    return pod_gpus(pod) if unschedulable else {}
