"""The ``GpuNode`` custom resource: what an agent writes (status from readings) and what a cache
reads back (a :class:`NodeInventory`). Pure functions over plain dicts in Kubernetes' wire format.

One object per node, cluster-scoped, named after the node; its status is written by that node's
agent only, so every controller replica sees the same inventory through a watch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.domain.catalogue import Catalogue, CatalogueError, GpuModel
from inventory.domain.health import GpuHealth
from inventory.domain.labels import GROUP
from inventory.domain.mig_layout import MigInstance
from inventory.domain.model import GpuDevice, NodeInventory, NodeName
from inventory.domain.readings import DeviceAssignment, GpuReading, GpuUuid, HostReading
from inventory.domain.times import format_time, parse_time

VERSION = "v1alpha1"
PLURAL = "gpunodes"
KIND = "GpuNode"
API_VERSION = f"{GROUP}/{VERSION}"

#: Status fields that change with every reading; they ride along with heartbeats instead of
#: causing a write of their own (a write per degree Celsius would be pure churn on etcd).
VOLATILE_GPU_FIELDS = frozenset({"temperatureC", "utilizationPercent", "powerWatts", "memoryUsedMiB"})
HEARTBEAT_FIELDS = frozenset({"heartbeatTime", "heartbeatGeneration"})


def new_gpunode(node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": node_name, "labels": {"app.kubernetes.io/managed-by": "kgm-agent"}},
        "spec": {"nodeName": node_name},
    }


def build_status(
    *,
    node_name: str,
    host: HostReading,
    health: Mapping[GpuUuid, GpuHealth],
    assignments: Sequence[DeviceAssignment] | None,
    catalogue: Catalogue,
    heartbeat_time: datetime,
    generation: int,
    agent_version: str,
) -> dict[str, Any]:
    """The status an agent publishes. ``assignments`` is None when the kubelet API is not there."""
    status: dict[str, Any] = {
        "nodeName": node_name,
        "driverVersion": host.driver_version,
        "cudaVersion": host.cuda_version,
        "agentVersion": agent_version,
        "heartbeatTime": format_time(heartbeat_time, micro=True),
        "heartbeatGeneration": generation,
        "podResourcesAvailable": assignments is not None,
        "gpus": [_gpu_status(gpu, health.get(gpu.uuid), catalogue) for gpu in host.gpus],
    }
    if assignments is not None:
        status["allocations"] = [
            {
                "namespace": a.namespace,
                "pod": a.pod,
                "container": a.container,
                "resource": a.resource,
                "deviceIds": list(a.device_ids),
            }
            for a in sorted(assignments, key=lambda a: (a.namespace, a.pod, a.container, a.resource))
        ]
    return status


def _gpu_status(gpu: GpuReading, health: GpuHealth | None, catalogue: Catalogue) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "product": gpu.name,
        "memoryTotalMiB": gpu.memory_total_mib,
        "memoryUsedMiB": gpu.memory_used_mib,
        "migEnabled": gpu.mig_enabled,
        "migPending": gpu.mig_pending,
        "migEnabledAfterReset": gpu.mig_enabled
        if gpu.mig_enabled_after_reset is None
        else gpu.mig_enabled_after_reset,
        "healthy": health.healthy if health else gpu.error is None,
    }
    # A model we have no table for gets no "model": readers fall back to what NVML says.
    with contextlib.suppress(CatalogueError):
        entry["model"] = catalogue.model(gpu.name).name
    optional = {
        "temperatureC": gpu.temperature_c,
        "utilizationPercent": gpu.utilization_pct,
        "powerWatts": gpu.power_w,
        "eccVolatileUncorrected": gpu.ecc_volatile_uncorrected,
        "retiredPagesPending": gpu.retired_pages_pending,
        "remappedRowsPending": gpu.remapped_rows_pending,
        "unhealthyReason": health.reason if health and not health.healthy else None,
        "error": gpu.error,
    }
    entry.update({key: value for key, value in optional.items() if value is not None})
    if gpu.mig_enabled:
        entry["migDevices"] = [
            {
                "uuid": mig.uuid,
                "profile": mig.profile,
                "gpuInstanceId": mig.gpu_instance_id,
                "memoryTotalMiB": mig.memory_total_mib,
                "placementStart": mig.placement_start,
                "placementSize": mig.placement_size,
            }
            for mig in sorted(gpu.mig_devices, key=lambda m: m.placement_start)
        ]
    return entry


def material(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status whose change is worth a write before the next heartbeat."""
    kept = {key: value for key, value in status.items() if key not in HEARTBEAT_FIELDS}
    kept["gpus"] = [
        {key: value for key, value in gpu.items() if key not in VOLATILE_GPU_FIELDS}
        for gpu in status.get("gpus", [])
    ]
    return kept


@dataclass(frozen=True, slots=True)
class ParsedGpuNode:
    """A GpuNode read back: the node's inventory, its heartbeat, and who holds which device."""

    inventory: NodeInventory
    generation: int
    heartbeat_time: datetime | None
    #: None when the agent could not read the kubelet's PodResources API.
    assignments: tuple[DeviceAssignment, ...] | None
    #: Parts of the status that could not be used, in words (unknown MIG profile...).
    problems: tuple[str, ...] = ()
    #: When the object was created (``metadata.creationTimestamp``, kept by the API server across our
    #: restarts): when kgm first saw the node's GPUs, from which their capacity is counted in costs.
    created: datetime | None = None


def parse_gpunode(obj: Mapping[str, Any], catalogue: Catalogue) -> ParsedGpuNode:
    """A GpuNode object as the cache uses it. Malformed parts are skipped and reported, never raised."""
    name = str(obj.get("metadata", {}).get("name", ""))
    status = obj.get("status") or {}
    problems: list[str] = []
    gpus = []
    for entry in status.get("gpus") or []:
        if not isinstance(entry, Mapping):
            problems.append("a gpus entry is not an object")
            continue
        gpus.append(_gpu_device(entry, catalogue, problems))
    allocations = status.get("allocations")
    assignments = None
    if status.get("podResourcesAvailable") and isinstance(allocations, list):
        assignments = tuple(
            DeviceAssignment(
                namespace=str(a.get("namespace", "")),
                pod=str(a.get("pod", "")),
                container=str(a.get("container", "")),
                resource=str(a.get("resource", "")),
                device_ids=tuple(str(d) for d in a.get("deviceIds") or []),
            )
            for a in allocations
            if isinstance(a, Mapping)
        )
    return ParsedGpuNode(
        inventory=NodeInventory(name=NodeName(name), gpus=tuple(gpus)),
        generation=_int(status.get("heartbeatGeneration")) or 0,
        heartbeat_time=parse_time(status.get("heartbeatTime")),
        assignments=assignments,
        problems=tuple(problems),
        created=_aware(parse_time(obj.get("metadata", {}).get("creationTimestamp"))),
    )


def _gpu_device(entry: Mapping[str, Any], catalogue: Catalogue, problems: list[str]) -> GpuDevice:
    product = str(entry.get("product") or entry.get("model") or "unknown")
    memory_mib = _int(entry.get("memoryTotalMiB"))
    model = _model(entry, product, memory_mib, catalogue)
    instances = []
    for mig in entry.get("migDevices") or []:
        try:
            profile = model.profile(str(mig.get("profile")))
        except CatalogueError as error:
            problems.append(f"GPU {entry.get('uuid')}: {error}")
            continue
        instances.append(
            MigInstance(profile=profile, start=_int(mig.get("placementStart")) or 0, uuid=mig.get("uuid"))
        )
    healthy = entry.get("healthy") is not False and not entry.get("error")
    return GpuDevice(
        index=_int(entry.get("index")) or 0,
        model=model,
        mig_enabled=bool(entry.get("migEnabled")),
        mig_instances=tuple(instances),
        uuid=entry.get("uuid"),
        healthy=healthy,
        unhealthy_reason=None
        if healthy
        else str(entry.get("unhealthyReason") or entry.get("error") or "unhealthy"),
        memory_total_mib=memory_mib,
        memory_used_mib=_int(entry.get("memoryUsedMiB")),
        temperature_c=_int(entry.get("temperatureC")),
        utilization_pct=_int(entry.get("utilizationPercent")),
        mig_pending=_mig_pending(entry),
    )


def _model(entry: Mapping[str, Any], product: str, memory_mib: int | None, catalogue: Catalogue) -> GpuModel:
    for name in (entry.get("model"), product):
        if name:
            try:
                return catalogue.model(str(name))
            except CatalogueError:
                pass
    # A model without a table: usable as whole GPUs, sized by what NVML reported.
    memory_gb = math.ceil((memory_mib or 0) / 1024)
    return GpuModel(name=product.replace(" ", "-"), memory_gb=memory_gb, product_names=(product,))


def _mig_pending(entry: Mapping[str, Any]) -> bool:
    """Whether a MIG mode change waits for a reset. An agent that writes ``migEnabledAfterReset`` says
    so in ``migPending``; an older one wrote the mode after the reset there, so a change is where it
    differs from the current mode (read that way, a rolling upgrade does not take every MIG GPU for
    one in the middle of a change)."""
    if "migEnabledAfterReset" in entry:
        return bool(entry.get("migPending"))
    return "migPending" in entry and bool(entry["migPending"]) != bool(entry.get("migEnabled"))


def _aware(moment: datetime | None) -> datetime | None:
    """A time with its zone; one without (never written by an API server) is not a time to compare."""
    return moment if moment is not None and moment.tzinfo is not None else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
