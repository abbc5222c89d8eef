"""An in-memory :class:`~inventory.domain.readings.GpuSource` built from the cluster description format.

Shipped, not test-only: the simulation runs node agents on it, and tests script GPU trouble through it
(temperature, XIDs, a device falling off the bus) without hardware. It answers like the real source:
stable NVIDIA-style UUIDs, memory in MiB as nvidia-smi shows it, utilization None on MIG-enabled GPUs,
and a failed device reported as a reading with ``error`` set while the others read normally.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from inventory.domain.catalogue import packaged_profile_rows
from inventory.domain.cluster_file import ClusterFileError, load_cluster
from inventory.domain.model import GpuDevice, NodeInventory
from inventory.domain.readings import GpuReading, GpuUuid, HostReading, MigDeviceReading, NvmlError, XidEvent

# Namespace of the fake UUIDs: the same node and index give the same UUID in every run and process.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "fake-gpu.gpu.kgm.io")

# What nvidia-smi reports as memory.total (MiB) where public captures show it; other models get their
# nominal size in MiB. E.g. "NVIDIA H100 80GB HBM3, 81559 MiB" is the usual H100 SXM line.
_MEMORY_TOTAL_MIB = {"H100-80GB": 81559, "A100-80GB": 81920, "A100-40GB": 40960}

IDLE_TEMPERATURE_C = 35
IDLE_POWER_W = 70.0


@cache
def _mig_memory_gib() -> dict[tuple[str, str], float]:
    """(model, profile) -> the 'Memory GiB' nvidia-smi shows for it, from the packaged MIG tables.

    The catalogue's ``MigProfile`` does not carry this figure, so it comes from the table's rows.
    """
    return {
        (model, str(p["name"])): float(p["memory_gib_nvidia_smi"])
        for model, p in packaged_profile_rows()
        if p.get("memory_gib_nvidia_smi") is not None
    }


def fake_uuid(node_name: str, gpu_index: int, gpu_instance_id: int | None = None) -> GpuUuid:
    """``GPU-<uuid>`` for a GPU, ``MIG-<uuid>`` for one of its MIG devices; stable across runs."""
    if gpu_instance_id is None:
        return GpuUuid(f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node_name}/{gpu_index}')}")
    return GpuUuid(f"MIG-{uuid.uuid5(_UUID_NAMESPACE, f'{node_name}/{gpu_index}/gi{gpu_instance_id}')}")


def _gpu_reading(node_name: str, gpu: GpuDevice) -> GpuReading:
    model = gpu.model
    mig_devices = []
    # GPU-instance ids are numbered from 1 in placement order (the driver's own numbering varies).
    for gi_id, instance in enumerate(sorted(gpu.mig_instances, key=lambda i: i.start), start=1):
        gib = _mig_memory_gib().get((model.name, instance.profile.name), float(instance.profile.memory_gb))
        mig_devices.append(
            MigDeviceReading(
                uuid=fake_uuid(node_name, gpu.index, gi_id),
                profile=instance.profile.name,
                gpu_instance_id=gi_id,
                memory_total_mib=round(gib * 1024),
                placement_start=instance.start,
                placement_size=instance.profile.placement_size,
            )
        )
    return GpuReading(
        index=gpu.index,
        uuid=fake_uuid(node_name, gpu.index),
        name=model.product_names[0] if model.product_names else model.name,
        memory_total_mib=_MEMORY_TOTAL_MIB.get(model.name, model.memory_gb * 1024),
        memory_used_mib=0,
        temperature_c=IDLE_TEMPERATURE_C,
        utilization_pct=None if gpu.mig_enabled else 0,
        power_w=IDLE_POWER_W,
        ecc_volatile_uncorrected=0,
        retired_pages_pending=False,
        remapped_rows_pending=False,
        mig_enabled=gpu.mig_enabled,
        mig_enabled_after_reset=gpu.mig_enabled,  # no change waiting
        mig_devices=tuple(mig_devices),
    )


@dataclass(slots=True)
class _FakeGpu:
    reading: GpuReading
    error: str | None = None


class FakeGpuSource:
    """GPUs in memory, scripted through the ``set_*``/``inject_xid``/``fail_device`` methods.

    ``read()`` and ``poll_events()`` are thread-safe: the agent may wait for events on another thread,
    and ``poll_events`` wakes as soon as ``inject_xid`` queues one.
    """

    def __init__(
        self,
        gpus: Sequence[GpuReading],
        *,
        driver_version: str = "550.54.15",
        cuda_version: str = "12.4",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gpus = {gpu.index: _FakeGpu(gpu) for gpu in gpus}
        self._driver_version = driver_version
        self._cuda_version = cuda_version
        self._clock = clock
        self._changed = threading.Condition()
        self._events: list[XidEvent] = []
        self._closed = False

    @classmethod
    def from_node(
        cls,
        node: NodeInventory,
        *,
        driver_version: str = "550.54.15",
        cuda_version: str = "12.4",
        clock: Callable[[], float] = time.monotonic,
    ) -> FakeGpuSource:
        """Idle GPUs as the node describes them (models, MIG layouts), with stable UUIDs."""
        gpus = [_gpu_reading(node.name, gpu) for gpu in node.gpus]
        return cls(gpus, driver_version=driver_version, cuda_version=cuda_version, clock=clock)

    @classmethod
    def from_cluster_file(
        cls, source: str | Path, node_name: str, *, clock: Callable[[], float] = time.monotonic
    ) -> FakeGpuSource:
        """The GPUs of ``node_name`` in a cluster file (or ``"demo"``, the built-in cluster)."""
        nodes = load_cluster(source).nodes
        for node in nodes:
            if node.name == node_name:
                return cls.from_node(node, clock=clock)
        known = ", ".join(n.name for n in nodes)
        raise ClusterFileError(f"{source}: no node {node_name!r}; its nodes: {known}")

    # -- GpuSource -------------------------------------------------------------------------------

    def read(self) -> HostReading:
        with self._changed:
            self._check_open()
            gpus = tuple(self._reading(gpu) for _, gpu in sorted(self._gpus.items()))
        return HostReading(driver_version=self._driver_version, cuda_version=self._cuda_version, gpus=gpus)

    def poll_events(self, timeout_s: float) -> Sequence[XidEvent]:
        with self._changed:
            self._check_open()
            self._changed.wait_for(lambda: self._events or self._closed, timeout=max(0.0, timeout_s))
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    # -- scripting -------------------------------------------------------------------------------

    def set_temperature(self, index: int, celsius: int) -> None:
        self._update(index, temperature_c=celsius)

    def set_utilization(self, index: int, pct: int) -> None:
        """GPU utilization; ignored on a MIG-enabled GPU, where NVML does not report it either."""
        with self._changed:
            gpu = self._gpu(index)
            if not gpu.reading.mig_enabled:
                gpu.reading = dataclasses.replace(gpu.reading, utilization_pct=pct)

    def set_memory_used(self, index: int, mib: int) -> None:
        self._update(index, memory_used_mib=mib)

    def set_mig_mode_after_reset(self, index: int, enabled: bool) -> None:
        """The MIG mode the GPU will have after its next reset (``mig.mode.pending`` in nvidia-smi): a
        change is pending while it differs from the current mode."""
        self._update(index, mig_enabled_after_reset=enabled)

    def inject_xid(self, index: int, xid: int) -> None:
        """Queues an XID for the next ``poll_events``, keyed by the physical GPU's UUID like NVML's."""
        with self._changed:
            event = XidEvent(uuid=self._gpu(index).reading.uuid, xid=xid, at=self._clock())
            self._events.append(event)
            self._changed.notify_all()

    def fail_device(self, index: int, error: str = "GPU is lost") -> None:
        """From now on ``read()`` reports this GPU with ``error`` set, its measurements None."""
        with self._changed:
            self._gpu(index).error = error

    def recover_device(self, index: int) -> None:
        with self._changed:
            self._gpu(index).error = None

    # -- internals -------------------------------------------------------------------------------

    def _update(self, index: int, **changes: Any) -> None:
        with self._changed:
            gpu = self._gpu(index)
            gpu.reading = dataclasses.replace(gpu.reading, **changes)

    def _gpu(self, index: int) -> _FakeGpu:
        try:
            return self._gpus[index]
        except KeyError:
            raise IndexError(f"no GPU {index}; this source has {sorted(self._gpus)}") from None

    @staticmethod
    def _reading(gpu: _FakeGpu) -> GpuReading:
        if gpu.error is None:
            return gpu.reading
        # Identity kept (the real source keeps whatever it read before the failure), nothing measured.
        healthy = gpu.reading
        return GpuReading(
            index=healthy.index,
            uuid=healthy.uuid,
            name=healthy.name,
            memory_total_mib=healthy.memory_total_mib,
            memory_used_mib=0,
            error=gpu.error,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise NvmlError("this FakeGpuSource is closed")
