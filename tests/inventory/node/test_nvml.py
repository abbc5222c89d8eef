"""NvmlSource against a pynvml stand-in that raises the real ``pynvml.NVMLError`` with the real codes.

The stand-in is the OS edge (there is no GPU here): it implements only the functions NvmlSource calls,
takes its constants from the real pynvml, and fails loudly on any other name.
"""

# The stand-in's methods carry pynvml's own camelCase names: that is the interface under test.
# ruff: noqa: N802

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from inventory.domain.readings import GpuLostError, GpuSource, NvmlError, NvmlUnavailableError
from inventory.node.nvml import UNAVAILABLE_MESSAGE, NvmlSource, derived_profile_name

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
    mig_mode: tuple[int, int] = (0, 0)
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
        return self._on("nvmlDeviceGetMigMode", h, lambda: list(h.mig_mode))

    def nvmlDeviceGetTemperature(self, h: FakeDevice, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._on("nvmlDeviceGetTemperature", h, lambda: 41)

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> SimpleNamespace:
        if h.mig_mode[0]:  # what NVML does on a MIG-enabled GPU
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
        mig_mode=(enabled, enabled),
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


def test_nvml_source_satisfies_the_gpu_source_protocol() -> None:
    source: GpuSource = NvmlSource(nvml=host())
    assert source.read().gpus


def test_a_whole_gpu_is_read_field_by_field() -> None:
    reading = NvmlSource(nvml=host()).read()
    assert (reading.driver_version, reading.cuda_version) == ("550.54.15", "12.4")
    gpu = reading.gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name) == (0, "GPU-0", "NVIDIA H100 80GB HBM3")
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (81559, 1024)
    assert (gpu.temperature_c, gpu.utilization_pct, gpu.power_w) == (41, 37, 123.456)
    assert gpu.ecc_volatile_uncorrected == 2
    assert (gpu.retired_pages_pending, gpu.remapped_rows_pending) == (False, True)
    assert (gpu.mig_enabled, gpu.mig_pending, gpu.mig_devices, gpu.error) == (False, False, (), None)


def test_a_mig_gpu_lists_its_mig_devices_named_from_the_catalogue_and_has_no_utilization() -> None:
    nvml = host(mig_gpu())
    gpu = NvmlSource(nvml=nvml).read().gpus[0]
    assert (gpu.mig_enabled, gpu.mig_pending, gpu.utilization_pct, gpu.error) == (True, True, None, None)
    assert "nvmlDeviceGetUtilizationRates" not in nvml.calls
    assert [(m.uuid, m.profile, m.gpu_instance_id, m.memory_total_mib) for m in gpu.mig_devices] == [
        ("MIG-a", "3g.40gb", 1, 40192),
        ("MIG-b", "1g.10gb+me", 13, 9856),
    ]
    assert [(m.placement_start, m.placement_size) for m in gpu.mig_devices] == [(0, 4), (6, 1)]
    assert "nvmlDeviceGetGpuInstanceProfileInfo" not in nvml.calls  # the catalogue knew both


def test_a_pending_mig_change_is_reported() -> None:
    device = FakeDevice("GPU-0", mig_mode=(pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE))
    gpu = NvmlSource(nvml=host(device)).read().gpus[0]
    assert (gpu.mig_enabled, gpu.mig_pending, gpu.utilization_pct) == (False, True, 37)


@pytest.mark.parametrize(
    ("name", "profile_id", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 15, "1g.20gb"),  # in the catalogue
        ("NVIDIA B200", 14, "2g.20gb"),  # unknown model: NVML's own profile name
        ("NVIDIA B200", 20, "1g.10gb+me"),
    ],
)
def test_mig_profile_names_come_from_the_catalogue_else_from_nvml(
    name: str, profile_id: int, expected: str
) -> None:
    device = mig_gpu()
    device.name = name
    device.migs = [FakeMig("MIG-x", gi_id=3, profile_id=profile_id, start=0, size=2, total_bytes=1)]
    assert NvmlSource(nvml=host(device)).read().gpus[0].mig_devices[0].profile == expected


def test_without_a_usable_nvml_name_the_profile_name_is_derived_from_slices_and_memory() -> None:
    nvml = host(mig_gpu())
    nvml.devices[0].name = "NVIDIA B200"
    nvml.profiles = {k: (pid, s, mem, "") for k, (pid, s, mem, _) in nvml.profiles.items()}
    profiles = [m.profile for m in NvmlSource(nvml=nvml).read().gpus[0].mig_devices]
    assert profiles == ["3g.40gb", "1g.10gb+me"]


@pytest.mark.parametrize(
    ("slices", "memory_mib", "total_mib", "suffix", "expected"),
    [
        (1, 9856, 81559, "", "1g.10gb"),  # H100 80GB
        (7, 80384, 81559, "", "7g.80gb"),
        (1, 4864, 40960, "", "1g.5gb"),  # A100 40GB
        (3, 71424, 143771, "", "3g.71gb"),  # H200: 70.5 rounds up, as in Go
        (1, 11008, 95830, "+me", "1g.12gb+me"),  # H100 NVL
    ],
)
def test_derived_profile_names_follow_nvidias_rounding(
    slices: int, memory_mib: int, total_mib: int, suffix: str, expected: str
) -> None:
    name = derived_profile_name(
        slices=slices, memory_mib=memory_mib, device_total_bytes=total_mib * MIB, suffix=suffix
    )
    assert name == expected


@pytest.mark.parametrize(
    ("function", "code"),
    [
        ("nvmlDeviceGetTotalEccErrors", pynvml.NVML_ERROR_NOT_SUPPORTED),  # ECC off / no ECC
        ("nvmlDeviceGetRetiredPagesPendingStatus", pynvml.NVML_ERROR_NOT_SUPPORTED),  # H100: rows, not pages
        ("nvmlDeviceGetRemappedRows", pynvml.NVML_ERROR_NOT_SUPPORTED),  # pre-Ampere
        ("nvmlDeviceGetRemappedRows", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),  # old driver
        ("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NOT_SUPPORTED),
        ("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_NOT_SUPPORTED),
        ("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_NOT_SUPPORTED),
    ],
)
def test_an_optional_field_the_gpu_lacks_is_none_without_an_error(function: str, code: int) -> None:
    device = FakeDevice("GPU-0", fail={function: code})
    gpu = NvmlSource(nvml=host(device)).read().gpus[0]
    assert gpu.error is None
    fields = {
        "nvmlDeviceGetTotalEccErrors": gpu.ecc_volatile_uncorrected,
        "nvmlDeviceGetRetiredPagesPendingStatus": gpu.retired_pages_pending,
        "nvmlDeviceGetRemappedRows": gpu.remapped_rows_pending,
        "nvmlDeviceGetPowerUsage": gpu.power_w,
        "nvmlDeviceGetTemperature": gpu.temperature_c,
        "nvmlDeviceGetUtilizationRates": gpu.utilization_pct,
    }
    assert fields[function] is None
    assert gpu.memory_total_mib == 81559


def test_a_gpu_without_mig_support_reads_as_mig_disabled() -> None:
    no_mig = {"nvmlDeviceGetMigMode": pynvml.NVML_ERROR_NOT_SUPPORTED}
    device = FakeDevice("GPU-0", name="NVIDIA L4", fail=no_mig)
    gpu = NvmlSource(nvml=host(device)).read().gpus[0]
    assert (gpu.mig_enabled, gpu.mig_pending, gpu.error) == (False, False, None)


def test_a_lost_gpu_is_reported_in_its_reading_and_the_others_are_still_read() -> None:
    lost = FakeDevice("GPU-1", fail={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_GPU_IS_LOST})
    reading = NvmlSource(nvml=host(FakeDevice("GPU-0"), lost, mig_gpu("GPU-2"))).read()
    assert [g.error for g in reading.gpus] == [None, "GPU is lost", None]
    gpu = reading.gpus[1]
    # What was read before the failure is kept; nothing after it is made up.
    assert (gpu.uuid, gpu.memory_total_mib, gpu.mig_enabled) == ("GPU-1", 81559, False)
    assert (gpu.temperature_c, gpu.power_w, gpu.ecc_volatile_uncorrected) == (None, None, None)
    assert len(reading.gpus[2].mig_devices) == 2


def test_a_device_whose_handle_fails_is_reported_with_empty_identity() -> None:
    broken = FakeDevice("GPU-0", fail={"nvmlDeviceGetHandleByIndex": pynvml.NVML_ERROR_UNKNOWN})
    gpu = NvmlSource(nvml=host(broken)).read().gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name) == (0, "", "")
    assert gpu.error == "nvmlDeviceGetHandleByIndex: Unknown Error"


def test_a_failing_mig_device_marks_its_parent_gpu() -> None:
    device = mig_gpu()
    device.fail = {"nvmlDeviceGetGpuInstanceById": pynvml.NVML_ERROR_NO_PERMISSION}
    gpu = NvmlSource(nvml=host(device)).read().gpus[0]
    assert gpu.error == "nvmlDeviceGetGpuInstanceById: Insufficient Permissions"
    assert (gpu.mig_enabled, gpu.mig_devices) == (True, ())


@pytest.mark.parametrize(
    ("function", "code", "error"),
    [
        ("nvmlDeviceGetCount", pynvml.NVML_ERROR_UNKNOWN, NvmlError),
        ("nvmlDeviceGetCount", pynvml.NVML_ERROR_GPU_IS_LOST, GpuLostError),
        ("nvmlSystemGetDriverVersion", pynvml.NVML_ERROR_UNINITIALIZED, NvmlError),
    ],
)
def test_a_host_that_cannot_be_read_raises_our_error_chained(function: str, code: int, error: type) -> None:
    nvml = host()
    nvml.fail[function] = code
    with pytest.raises(error) as raised:
        NvmlSource(nvml=nvml).read()
    assert isinstance(raised.value.__cause__, pynvml.NVMLError)


@pytest.mark.parametrize("v2", [True, False])
def test_the_cuda_version_is_formatted_from_its_integer(v2: bool) -> None:
    nvml = host()
    nvml.cuda, nvml.cuda_v2 = 12080, v2
    assert NvmlSource(nvml=nvml).read().cuda_version == "12.8"


def test_an_unreadable_cuda_version_is_empty_not_an_error() -> None:
    nvml = host()
    nvml.fail["nvmlSystemGetCudaDriverVersion_v2"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    reading = NvmlSource(nvml=nvml).read()
    assert (reading.cuda_version, len(reading.gpus)) == ("", 3)


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_a_missing_driver_is_reported_as_unavailable(code: int) -> None:
    nvml = host()
    nvml.fail["nvmlInit"] = code
    with pytest.raises(NvmlUnavailableError, match="is the NVIDIA driver installed") as raised:
        NvmlSource(nvml=nvml)
    assert isinstance(raised.value.__cause__, pynvml.NVMLError)


def test_another_init_failure_is_an_nvml_error_but_not_unavailable() -> None:
    nvml = host()
    nvml.fail["nvmlInit"] = pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(NvmlError, match="nvmlInit failed: Insufficient Permissions") as raised:
        NvmlSource(nvml=nvml)
    assert not isinstance(raised.value, NvmlUnavailableError)


def test_on_this_machine_without_a_driver_the_real_pynvml_gives_unavailable() -> None:
    try:
        source = NvmlSource()
    except NvmlUnavailableError as error:
        assert str(error).startswith(UNAVAILABLE_MESSAGE)
    else:  # a machine with a driver: nothing to prove here
        source.close()
        pytest.skip("an NVIDIA driver is present")


# -- library exceptions never escape ------------------------------------------------------------


def every_path() -> FakeNvml:
    """Whole GPU, MIG GPU, and a MIG GPU of a model the catalogue lacks (profile info is asked)."""
    unknown = mig_gpu("GPU-b200")
    unknown.name = "NVIDIA B200"
    return host(FakeDevice("GPU-0"), mig_gpu(), unknown)


def calls_of_a_full_read_and_poll() -> list[str]:
    nvml = every_path()
    nvml.events = [xid(nvml.devices[0], 79)]
    source = NvmlSource(nvml=nvml)
    source.read()
    source.poll_events(0.1)
    source.close()
    return sorted(set(nvml.calls) - {"nvmlInit"})


ERROR_CODES = [
    pynvml.NVML_ERROR_UNKNOWN,
    pynvml.NVML_ERROR_GPU_IS_LOST,
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_TIMEOUT,
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
]


FAILING_CALLS = list(itertools.product(calls_of_a_full_read_and_poll(), ERROR_CODES))


@pytest.mark.parametrize(("function", "code"), FAILING_CALLS)
def test_any_single_failing_call_gives_a_reading_or_our_error_never_a_library_error(
    function: str, code: int
) -> None:
    nvml = every_path()
    nvml.fail[function] = code
    for device in nvml.devices:
        device.fail[function] = code
    nvml.events = [xid(nvml.devices[0], 79)]
    source = NvmlSource(nvml=nvml)
    for action in (source.read, lambda: source.poll_events(0.1), source.close):
        try:
            action()
        except NvmlError as error:
            assert isinstance(error.__cause__, pynvml.NVMLError)


class RaisingNvml:
    """Every nvml* function raises ``code``; with ``init_ok`` nvmlInit (and only it) succeeds."""

    NVMLError = pynvml.NVMLError

    def __init__(self, code: int, *, init_ok: bool) -> None:
        self.code, self.init_ok = code, init_ok

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML_", "nvmlEventType")):
            return getattr(pynvml, name)

        def raising(*args: object) -> None:
            if not (name == "nvmlInit" and self.init_ok):
                raise nvml_error(self.code)

        return raising


@pytest.mark.parametrize("code", ERROR_CODES)
def test_a_library_raising_on_everything_only_ever_gives_our_errors(code: int) -> None:
    with pytest.raises(NvmlError):
        NvmlSource(nvml=RaisingNvml(code, init_ok=False))
    source = NvmlSource(nvml=RaisingNvml(code, init_ok=True))
    with pytest.raises(NvmlError):
        source.read()
    with pytest.raises(NvmlError):
        source.poll_events(0.0)
    source.close()  # logs, never raises


# -- events -------------------------------------------------------------------------------------


def test_events_are_registered_once_for_every_device_that_supports_them() -> None:
    nvml = host()
    nvml.devices[2].fail["nvmlDeviceRegisterEvents"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    source = NvmlSource(nvml=nvml)
    assert source.poll_events(0.5) == []
    assert source.poll_events(0.5) == []
    assert nvml.registered == ["GPU-0", "GPU-mig"]
    assert nvml.calls.count("nvmlEventSetCreate") == 1
    assert nvml.waits == [500, 500]


def test_all_queued_xids_are_collected_with_the_gpu_uuid_and_the_clock() -> None:
    nvml = host()
    nvml.events = [xid(nvml.devices[1], 79), xid(nvml.devices[0], 48)]
    source = NvmlSource(nvml=nvml, clock=lambda: 1234.5)
    events = source.poll_events(2.0)
    assert [(e.uuid, e.xid, e.at) for e in events] == [("GPU-mig", 79, 1234.5), ("GPU-0", 48, 1234.5)]
    assert nvml.waits == [2000, 0, 0]  # after the first event, only what is already queued


def test_a_wait_error_after_some_events_returns_them_and_raises_on_the_next_call() -> None:
    nvml = host()
    nvml.events = [xid(nvml.devices[0], 79), pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_GPU_IS_LOST]
    source = NvmlSource(nvml=nvml)
    assert [e.xid for e in source.poll_events(1.0)] == [79]
    with pytest.raises(GpuLostError):
        source.poll_events(1.0)


def test_non_xid_events_and_xids_from_an_unnamed_gpu_are_skipped() -> None:
    nvml = host()
    other = SimpleNamespace(device=nvml.devices[0], eventType=pynvml.nvmlEventTypePState, eventData=0)
    unnamed = xid(FakeDevice("GPU-gone", fail={"nvmlDeviceGetUUID": pynvml.NVML_ERROR_GPU_IS_LOST}), 79)
    nvml.events = [other, unnamed, xid(nvml.devices[0], 94)]
    nvml.devices.append(unnamed.device)
    assert [e.xid for e in NvmlSource(nvml=nvml).poll_events(1.0)] == [94]


def test_close_frees_the_event_set_and_shuts_down_once() -> None:
    nvml = host()
    source = NvmlSource(nvml=nvml)
    source.poll_events(0.0)
    source.close()
    source.close()
    assert (nvml.freed, nvml.shutdowns) == (1, 1)
    with pytest.raises(NvmlError, match="closed"):
        source.read()


def test_the_source_is_a_context_manager_that_closes() -> None:
    nvml = host()
    with NvmlSource(nvml=nvml) as source:
        source.read()
    assert (nvml.freed, nvml.shutdowns) == (0, 1)


class NvmlWithMemoryV2(FakeNvml):
    """A driver with ``nvmlDeviceGetMemoryInfo_v2``: ``used`` there leaves the reservation out."""

    nvmlMemory_v2 = pynvml.nvmlMemory_v2  # noqa: N815  (pynvml's own name)
    reserved_bytes = 615 * 1024 * 1024

    def __init__(self, devices: list[FakeDevice], *, v2_error: int | None = None) -> None:
        super().__init__(devices)
        self.v2_error = v2_error

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice | FakeMig, version: int | None = None) -> SimpleNamespace:
        if version is None:  # v1: the reservation counts as used
            memory = super().nvmlDeviceGetMemoryInfo(h)
            return SimpleNamespace(total=memory.total, used=memory.used + self.reserved_bytes)
        assert version == pynvml.nvmlMemory_v2
        if self.v2_error is not None:
            raise nvml_error(self.v2_error)
        return super().nvmlDeviceGetMemoryInfo(h)


def test_memory_used_is_read_as_nvidia_smi_shows_it_without_the_driver_reservation() -> None:
    device = FakeDevice(uuid="GPU-v2", name="NVIDIA H200", total_bytes=143771 * 1024 * 1024, used_bytes=0)
    (gpu,) = NvmlSource(nvml=NvmlWithMemoryV2([device])).read().gpus
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (143771, 0)


def test_a_driver_without_the_v2_memory_call_falls_back_to_v1() -> None:
    device = FakeDevice(uuid="GPU-v1", name="NVIDIA H200", total_bytes=143771 * 1024 * 1024, used_bytes=0)
    nvml = NvmlWithMemoryV2([device], v2_error=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    (gpu,) = NvmlSource(nvml=nvml).read().gpus
    assert gpu.memory_used_mib == 615
