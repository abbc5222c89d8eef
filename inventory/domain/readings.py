"""What a node's GPUs look like through NVML, as plain data, and the interface that reads them.

Two implementations sit behind :class:`GpuSource`: ``inventory.node.nvml.NvmlSource`` (the real library,
through pynvml; the only module that imports it) and ``inventory.node.fake_gpu.FakeGpuSource`` (driven by
the cluster description format, for tests and the simulation). Everything above this interface
(health, the node agent, the GpuNode status) is the same whichever one is plugged in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType, Protocol

GpuUuid = NewType("GpuUuid", str)


class NvmlError(Exception):
    """NVML failed: the library is missing, or a call on the host or one device failed."""


class NvmlUnavailableError(NvmlError):
    """No NVML library (no driver on this host): the agent cannot run here at all."""


class GpuLostError(NvmlError):
    """A device fell off the bus or stopped answering (NVML_ERROR_GPU_IS_LOST)."""


@dataclass(frozen=True, slots=True)
class MigDeviceReading:
    """One MIG device (a GPU instance with its compute instance) on a MIG-enabled GPU."""

    uuid: GpuUuid
    #: The GPU-instance profile name, e.g. ``1g.10gb`` or ``1g.10gb+me``, as in the MIG catalogue.
    profile: str
    gpu_instance_id: int
    memory_total_mib: int
    #: Memory-slice placement of the GPU instance (start and size).
    placement_start: int
    placement_size: int


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One physical GPU at one moment. Fields NVML could not give are None, never made up."""

    index: int
    uuid: GpuUuid
    #: NVML's product name, e.g. ``NVIDIA H100 80GB HBM3``.
    name: str
    memory_total_mib: int
    memory_used_mib: int
    temperature_c: int | None = None
    #: GPU utilization in percent; None where NVML does not report it (MIG-enabled GPUs).
    utilization_pct: int | None = None
    power_w: float | None = None
    ecc_volatile_uncorrected: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    #: The MIG mode now (NVML's current mode, nvidia-smi's ``mig.mode.current``).
    mig_enabled: bool = False
    #: The MIG mode after the next GPU reset (NVML's pending mode, nvidia-smi's ``mig.mode.pending``);
    #: None where NVML has no MIG mode (not MIG-capable), which is never a change.
    mig_enabled_after_reset: bool | None = None
    mig_devices: tuple[MigDeviceReading, ...] = ()
    #: Set when reading this device failed part-way; the other devices are unaffected.
    error: str | None = None

    @property
    def mig_pending(self) -> bool:
        """A MIG mode change waits for a GPU reset: the two modes differ (not "MIG is enabled")."""
        return self.mig_enabled_after_reset is not None and self.mig_enabled_after_reset != self.mig_enabled


@dataclass(frozen=True, slots=True)
class HostReading:
    driver_version: str
    cuda_version: str
    gpus: tuple[GpuReading, ...]


@dataclass(frozen=True, slots=True)
class XidEvent:
    """An XID error reported by the driver for a GPU (NVML event ``XidCriticalError``)."""

    uuid: GpuUuid
    xid: int
    #: Seconds on the agent's monotonic clock when the event was seen.
    at: float


class GpuSource(Protocol):
    """Reads a node's GPUs. Implementations keep errors per device (``GpuReading.error``)."""

    def read(self) -> HostReading:
        """Every GPU now. Raises NvmlError only when the host as a whole cannot be read."""
        ...

    def poll_events(self, timeout_s: float) -> Sequence[XidEvent]:
        """XID events since the last call, waiting up to ``timeout_s`` for the first one."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeviceAssignment:
    """The devices of one resource that the kubelet gave to one container."""

    namespace: str
    pod: str
    container: str
    #: Extended resource name, e.g. ``nvidia.com/gpu`` or ``nvidia.com/mig-1g.10gb``.
    resource: str
    #: Device-plugin ids: GPU UUIDs, MIG UUIDs, or whatever the plugin advertises (``GPU-...::2``).
    device_ids: tuple[str, ...]
