"""GpuNode objects for tests, built the way an agent builds them (through ``build_status``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.readings import DeviceAssignment, GpuReading, GpuUuid, HostReading, MigDeviceReading

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    """A monotonic clock (called) and a wall clock that move together, from T0."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = T0

    def __call__(self) -> float:
        return self.now

    def wall_clock(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


def gpu(
    index: int,
    *,
    node: str = "n",
    product: str = "NVIDIA H100 80GB HBM3",
    mig: list[tuple[str, int]] | None = None,
    temperature: int = 40,
) -> GpuReading:
    devices = tuple(
        MigDeviceReading(
            uuid=GpuUuid(f"MIG-{node}-{index}-{start}"),
            profile=profile,
            gpu_instance_id=start + 1,
            memory_total_mib=10000,
            placement_start=start,
            placement_size=1,
        )
        for profile, start in (mig or [])
    )
    return GpuReading(
        index=index,
        uuid=GpuUuid(f"GPU-{node}-{index}"),
        name=product,
        memory_total_mib=81559,
        memory_used_mib=0,
        temperature_c=temperature,
        utilization_pct=None if mig else 0,
        mig_enabled=mig is not None,
        mig_enabled_after_reset=mig is not None,
        mig_devices=devices,
    )


def gpunode(
    name: str,
    gpus: list[GpuReading],
    *,
    generation: int = 1,
    heartbeat: datetime = T0,
    unhealthy: dict[str, str] | None = None,
    assignments: list[DeviceAssignment] | None = None,
) -> dict[str, Any]:
    health = {
        g.uuid: GpuHealth(healthy=g.uuid not in (unhealthy or {}), reason=(unhealthy or {}).get(g.uuid))
        for g in gpus
    }
    status = build_status(
        node_name=name,
        host=HostReading("550.54.15", "12.4", tuple(gpus)),
        health=health,
        assignments=assignments,
        catalogue=builtin_catalogue(),
        heartbeat_time=heartbeat,
        generation=generation,
        agent_version="test",
    )
    return {**new_gpunode(name), "status": status}


def pod(uid: str, node: str | None, resources: dict[str, str], *, phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": resources}}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"uid": uid, "name": f"pod-{uid}", "namespace": "ml"},
        "spec": spec,
        "status": {"phase": phase},
    }


SEVEN_SMALL = [("1g.10gb", i) for i in range(7)]
