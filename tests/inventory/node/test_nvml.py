"""NvmlSource reads a host field by field against the pynvml stand-in (``fake_nvml``): whole and MIG
GPUs, MIG profile names, optional fields a GPU lacks, a lost GPU among healthy ones, the CUDA version,
and memory used as nvidia-smi shows it.
"""

# The stand-in's methods carry pynvml's own camelCase names: that is the interface under test.
# ruff: noqa: N802

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from inventory.domain.readings import GpuLostError, GpuSource, NvmlError
from inventory.node.nvml import NvmlSource, derived_profile_name
from tests.inventory.node.fake_nvml import (
    MIB,
    FakeDevice,
    FakeMig,
    FakeNvml,
    host,
    mig_gpu,
    nvml_error,
)


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
    assert (gpu.mig_enabled, gpu.mig_pending, gpu.utilization_pct, gpu.error) == (True, False, None, None)
    assert "nvmlDeviceGetUtilizationRates" not in nvml.calls
    assert [(m.uuid, m.profile, m.gpu_instance_id, m.memory_total_mib) for m in gpu.mig_devices] == [
        ("MIG-a", "3g.40gb", 1, 40192),
        ("MIG-b", "1g.10gb+me", 13, 9856),
    ]
    assert [(m.placement_start, m.placement_size) for m in gpu.mig_devices] == [(0, 4), (6, 1)]
    assert "nvmlDeviceGetGpuInstanceProfileInfo" not in nvml.calls  # the catalogue knew both


ON, OFF = pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_DISABLE


@pytest.mark.parametrize(
    ("current", "pending", "enabled", "after_reset", "change_pending"),
    [
        pytest.param(OFF, OFF, False, False, False, id="off"),
        pytest.param(ON, ON, True, True, False, id="on: enabled is not pending"),
        pytest.param(OFF, ON, False, True, True, id="being enabled"),
        pytest.param(ON, OFF, True, False, True, id="being disabled"),
    ],
)
def test_mig_pending_is_a_change_waiting_for_a_reset_not_mig_being_on(
    current: int, pending: int, enabled: bool, after_reset: bool, change_pending: bool
) -> None:
    device = FakeDevice("GPU-0", mig_current=current, mig_pending=pending)
    gpu = NvmlSource(nvml=host(device)).read().gpus[0]
    assert (gpu.mig_enabled, gpu.mig_enabled_after_reset, gpu.mig_pending) == (
        enabled,
        after_reset,
        change_pending,
    )
    assert (gpu.utilization_pct is None) == enabled  # NVML has none with MIG on now, whatever is pending


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
