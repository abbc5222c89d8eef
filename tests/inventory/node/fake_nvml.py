"""A pynvml stand-in for NvmlSource's tests, raising the real ``pynvml.NVMLError`` with the real codes.

The stand-in is the OS edge (there is no GPU here): it implements only the functions NvmlSource calls,
takes its constants from the real pynvml, and fails loudly on any other name.
"""

# The stand-in's methods carry pynvml's own camelCase names: that is the interface under test.
# ruff: noqa: N802

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

MIB = 1024 * 1024
H100_BYTES = 81559 * MIB
# H100-80GB GPU-instance profiles: profile index -> (profile id, slices, memory MiB, NVML's name).
H100_PROFILES = {
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE: (19, 1, 9856, "MIG 1g.10gb"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1: (20, 1, 9856, "MIG 1g.10gb+me"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2: (15, 1, 19968, "MIG 1g.20gb"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE: (14, 2, 19968, "MIG 2g.20gb"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE: (9, 3, 40192, "MIG 3g.40gb"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE: (5, 4, 40192, "MIG 4g.40gb"),
    pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE: (0, 7, 80384, "MIG 7g.80gb"),
}


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeMig:
    uuid: str
    gi_id: int
    profile_id: int
    start: int
    size: int
    total_bytes: int


@dataclass
class FakeDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    total_bytes: int = H100_BYTES
    used_bytes: int = 1024 * MIB
    #: NVML's current MIG mode and the mode after the next reset (pending), apart as on a real GPU:
    #: ``nvidia-smi -mig 1`` changes only the pending one until the GPU is reset.
    mig_current: int = pynvml.NVML_DEVICE_MIG_DISABLE
    mig_pending: int = pynvml.NVML_DEVICE_MIG_DISABLE
    #: Slots of nvmlDeviceGetMigDeviceHandleByIndex; None is an empty slot (NOT_FOUND).
    migs: list[FakeMig | None] = field(default_factory=list)
    #: Function name -> NVML error code that call raises for this device.
    fail: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    """The part of pynvml that NvmlSource uses; unknown names raise AttributeError (fail loudly)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices: list[FakeDevice], *, cuda: int = 12040, cuda_v2: bool = True) -> None:
        self.devices = devices
        self.cuda = cuda
        self.cuda_v2 = cuda_v2
        self.profiles = dict(H100_PROFILES)
        self.fail: dict[str, int] = {}  # host-level: function name -> error code
        self.events: list[SimpleNamespace | int] = []  # queued event data, or an error code to raise
        self.waits: list[int] = []
        self.registered: list[str] = []
        self.calls: list[str] = []
        self.shutdowns = 0
        self.freed = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML_", "nvmlEventType")):
            return getattr(pynvml, name)  # the real constants, so the mapping is tested against them
        if name == "nvmlSystemGetCudaDriverVersion_v2" and self.cuda_v2:
            return lambda: self._host("nvmlSystemGetCudaDriverVersion_v2", self.cuda)
        raise AttributeError(f"the pynvml stand-in has no {name}")

    def _host(self, function: str, result: Any) -> Any:
        self.calls.append(function)
        if function in self.fail:
            raise nvml_error(self.fail[function])
        return result

    def _on(self, function: str, handle: FakeDevice | FakeMig, result: Callable[[], Any]) -> Any:
        self.calls.append(function)
        device = handle if isinstance(handle, FakeDevice) else self._parent(handle)
        if function in device.fail:
            raise nvml_error(device.fail[function])
        return result()

    def _parent(self, mig: FakeMig) -> FakeDevice:
        return next(d for d in self.devices if mig in d.migs)

    # -- system
    def nvmlInit(self) -> None:
        self._host("nvmlInit", None)

    def nvmlShutdown(self) -> None:
        self._host("nvmlShutdown", None)
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._host("nvmlSystemGetDriverVersion", "550.54.15"))

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self._host("nvmlSystemGetCudaDriverVersion", self.cuda))

    def nvmlDeviceGetCount(self) -> int:
        return int(self._host("nvmlDeviceGetCount", len(self.devices)))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self._on("nvmlDeviceGetHandleByIndex", self.devices[index], lambda: self.devices[index])

    # -- device
    def nvmlDeviceGetUUID(self, h: FakeDevice | FakeMig) -> str:
        return self._on("nvmlDeviceGetUUID", h, lambda: h.uuid)

    def nvmlDeviceGetName(self, h: FakeDevice) -> bytes:
        return self._on("nvmlDeviceGetName", h, h.name.encode)  # bytes, as older pynvml returned

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice | FakeMig) -> SimpleNamespace:
        used = h.used_bytes if isinstance(h, FakeDevice) else 0
        return self._on("nvmlDeviceGetMemoryInfo", h, lambda: SimpleNamespace(total=h.total_bytes, used=used))

    def nvmlDeviceGetMigMode(self, h: FakeDevice) -> list[int]:
        return self._on("nvmlDeviceGetMigMode", h, lambda: [h.mig_current, h.mig_pending])

    def nvmlDeviceGetTemperature(self, h: FakeDevice, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._on("nvmlDeviceGetTemperature", h, lambda: 41)

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> SimpleNamespace:
        if h.mig_current:  # what NVML does on a MIG-enabled GPU
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self._on("nvmlDeviceGetUtilizationRates", h, lambda: SimpleNamespace(gpu=37, memory=12))

    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:
        return self._on("nvmlDeviceGetPowerUsage", h, lambda: 123456)

    def nvmlDeviceGetTotalEccErrors(self, h: FakeDevice, error_type: int, counter: int) -> int:
        assert (error_type, counter) == (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)
        return self._on("nvmlDeviceGetTotalEccErrors", h, lambda: 2)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: FakeDevice) -> int:
        return self._on("nvmlDeviceGetRetiredPagesPendingStatus", h, lambda: pynvml.NVML_FEATURE_DISABLED)

    def nvmlDeviceGetRemappedRows(self, h: FakeDevice) -> tuple[int, int, int, int]:
        return self._on("nvmlDeviceGetRemappedRows", h, lambda: (0, 1, 1, 0))

    # -- MIG
    def nvmlDeviceGetMaxMigDeviceCount(self, h: FakeDevice) -> int:
        return self._on("nvmlDeviceGetMaxMigDeviceCount", h, lambda: len(h.migs))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: FakeDevice, index: int) -> FakeMig:
        mig = h.migs[index]
        if mig is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return self._on("nvmlDeviceGetMigDeviceHandleByIndex", h, lambda: mig)

    def nvmlDeviceGetGpuInstanceId(self, h: FakeMig) -> int:
        return self._on("nvmlDeviceGetGpuInstanceId", h, lambda: h.gi_id)

    def nvmlDeviceGetGpuInstanceById(self, h: FakeDevice, gi_id: int) -> tuple[FakeDevice, FakeMig]:
        mig = next(m for m in h.migs if m is not None and m.gi_id == gi_id)
        return self._on("nvmlDeviceGetGpuInstanceById", h, lambda: (h, mig))

    def nvmlGpuInstanceGetInfo(self, gi: tuple[FakeDevice, FakeMig]) -> SimpleNamespace:
        parent, mig = gi
        placement = SimpleNamespace(start=mig.start, size=mig.size)
        info = SimpleNamespace(id=mig.gi_id, profileId=mig.profile_id, placement=placement)
        return self._on("nvmlGpuInstanceGetInfo", parent, lambda: info)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: FakeDevice, index: int) -> SimpleNamespace:
        if index not in self.profiles:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        pid, slices, memory, name = self.profiles[index]
        info = SimpleNamespace(id=pid, sliceCount=slices, memorySizeMB=memory, name=name.encode())
        return self._on("nvmlDeviceGetGpuInstanceProfileInfo", h, lambda: info)

    # -- events
    def nvmlEventSetCreate(self) -> str:
        return str(self._host("nvmlEventSetCreate", "event-set"))

    def nvmlEventSetFree(self, event_set: str) -> None:
        self._host("nvmlEventSetFree", None)
        self.freed += 1

    def nvmlDeviceRegisterEvents(self, h: FakeDevice, types: int, event_set: str) -> None:
        assert types == pynvml.nvmlEventTypeXidCriticalError and event_set == "event-set"
        self._on("nvmlDeviceRegisterEvents", h, lambda: self.registered.append(h.uuid))

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        self.calls.append("nvmlEventSetWait_v2")
        self.waits.append(timeout_ms)
        if not self.events:
            raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)
        event = self.events.pop(0)
        if isinstance(event, int):
            raise nvml_error(event)
        return event


def mig_gpu(uuid: str = "GPU-mig") -> FakeDevice:
    """An H100 with MIG on: a 3g.40gb at 0, an empty slot, a 1g.10gb+me at 6."""
    enabled = pynvml.NVML_DEVICE_MIG_ENABLE
    return FakeDevice(
        uuid=uuid,
        mig_current=enabled,
        mig_pending=enabled,
        migs=[
            FakeMig("MIG-a", gi_id=1, profile_id=9, start=0, size=4, total_bytes=40192 * MIB),
            None,
            FakeMig("MIG-b", gi_id=13, profile_id=20, start=6, size=1, total_bytes=9856 * MIB),
        ],
    )


def host(*devices: FakeDevice) -> FakeNvml:
    return FakeNvml(list(devices) or [FakeDevice("GPU-0"), mig_gpu(), FakeDevice("GPU-2")])


def xid(device: FakeDevice, number: int) -> SimpleNamespace:
    return SimpleNamespace(
        device=device, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=number,
        gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF,
    )  # fmt: skip
