"""The real :class:`~inventory.domain.readings.GpuSource`: the NVIDIA driver through pynvml.

This is the only module that imports ``pynvml`` (an import-linter contract keeps it so), and every
library error is turned into our ``NvmlError`` family here, in one place. The library is injected
(``nvml=``, the ``pynvml`` module by default) so tests can pass a stand-in with the same function
names: this is the OS edge, where a stand-in is the right tool.

Errors stay per device: a failed call while reading one GPU sets that reading's ``error`` (keeping the
fields read before it) and the other GPUs are still read. Optional fields that a GPU does not have
(NVML_ERROR_NOT_SUPPORTED: no ECC on this SKU, no utilization on a MIG-enabled GPU, ...) are None.
Only when the host itself cannot be read (driver version, device count) does ``read()`` raise.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import pynvml  # type: ignore[import-untyped]

from inventory.domain.catalogue import CatalogueError, builtin_catalogue, packaged_profile_rows
from inventory.domain.readings import (
    GpuLostError,
    GpuReading,
    GpuUuid,
    HostReading,
    MigDeviceReading,
    NvmlError,
    NvmlUnavailableError,
    XidEvent,
)

_log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_GIB = 1024 * _MIB
UNAVAILABLE_MESSAGE = (
    "NVML library not found: is the NVIDIA driver installed and the container run with the NVIDIA runtime?"
)
# An XID storm must not keep one poll_events() call draining forever; the rest come on the next call.
_MAX_EVENTS_PER_POLL = 1024

# GPU-instance profile indices (NVML_GPU_INSTANCE_PROFILE_*, an NVML ABI enum) and the suffix NVIDIA
# gives their names: REV1 is the media-extension variant (1g.10gb+me); ALL_ME, NO_ME and GFX are Blackwell's.
_SUFFIXES = (("_REV1", "+me"), ("_ALL_ME", "+me.all"), ("_NO_ME", "-me"), ("_GFX", "+gfx"))
_PROFILE_INDEX_SUFFIXES = {
    getattr(pynvml, name): next((s for marker, s in _SUFFIXES if name.endswith(marker)), "")
    for name in dir(pynvml)
    if name.startswith("NVML_GPU_INSTANCE_PROFILE_") and not name.endswith("_COUNT")
}
_PROFILE_NAME = re.compile(r"^\d+g\.\d+gb\S*$")


class _CallError(Exception):
    """A pynvml call on one device failed; carries which call, for the reading's ``error``."""

    def __init__(self, function: str, error: BaseException) -> None:
        super().__init__(f"{function}: {error}")
        self.function = function
        self.error = error


def _code(error: BaseException) -> int | None:
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    # pynvml decodes C strings since 11.x; older versions (and ctypes char arrays) give bytes.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@cache
def _gi_profile_names() -> dict[str, dict[int, str]]:
    """Model name -> GPU-instance profile id -> profile name, from the packaged MIG tables.

    The catalogue's ``MigProfile`` does not carry ``gi_profile_id``, so it comes from the table's rows.
    """
    names: dict[str, dict[int, str]] = {}
    for model, profile in packaged_profile_rows():
        if profile.get("gi_profile_id") is not None:
            names.setdefault(model, {})[int(profile["gi_profile_id"])] = str(profile["name"])
    return names


def catalogue_profile_name(product_name: str, profile_id: int) -> str | None:
    """The catalogue's name for GPU-instance profile ``profile_id`` on a GPU of that NVML product name."""
    try:
        model = builtin_catalogue().model(product_name)
    except CatalogueError:
        return None
    return _gi_profile_names().get(model.name, {}).get(profile_id)


def derived_profile_name(*, slices: int, memory_mib: int, device_total_bytes: int, suffix: str = "") -> str:
    """A profile name the way NVIDIA builds it (go-nvlib ``getMigMemorySizeGB``).

    The profile's share of the GPU's memory is rounded up to eighths and multiplied by the GPU's memory
    in whole GiB, rounded half away from zero like Go's ``math.Round`` (H200: 3g.71gb, not 3g.70gb).
    """
    eighths = math.ceil(memory_mib * _MIB / device_total_bytes * 8) / 8
    total_gib = -(-device_total_bytes // _GIB)
    return f"{slices}g.{math.floor(eighths * total_gib + 0.5)}gb{suffix}"


class NvmlSource:
    """Reads this host's GPUs through NVML. Thread-safe: ``poll_events`` may run on its own thread."""

    def __init__(self, *, nvml: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml: Any = pynvml if nvml is None else nvml
        self._clock = clock
        self._lock = threading.Lock()
        self._event_set: Any = None
        self._closed = False
        self._profile_names: dict[tuple[str, int], str] = {}
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as error:
            missing = (self._nvml.NVML_ERROR_LIBRARY_NOT_FOUND, self._nvml.NVML_ERROR_DRIVER_NOT_LOADED)
            if _code(error) in missing:
                raise NvmlUnavailableError(f"{UNAVAILABLE_MESSAGE} ({error})") from error
            raise NvmlError(f"nvmlInit failed: {error}") from error

    def __enter__(self) -> NvmlSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self) -> HostReading:
        self._check_open()
        try:
            driver = _text(self._nvml.nvmlSystemGetDriverVersion())
            count = int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError as error:
            raise self._host_error("cannot read the GPUs of this host", error) from error
        gpus = tuple(self._read_gpu(index) for index in range(count))
        return HostReading(driver_version=driver, cuda_version=self._cuda_version(), gpus=gpus)

    def poll_events(self, timeout_s: float) -> Sequence[XidEvent]:
        self._check_open()
        nvml = self._nvml
        event_set = self._registered_event_set()
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        events: list[XidEvent] = []
        while len(events) < _MAX_EVENTS_PER_POLL:
            # Wait for the first event only; then take whatever else is already queued.
            timeout_ms = 0 if events else max(0, int(timeout_s * 1000))
            try:
                data = wait(event_set, timeout_ms)
            except nvml.NVMLError as error:
                if _code(error) == nvml.NVML_ERROR_TIMEOUT:
                    break
                if events:
                    # Hand over what was seen; the error, if it persists, is raised by the next call.
                    _log.warning("waiting for NVML events failed after %d events: %s", len(events), error)
                    break
                raise self._host_error("waiting for NVML events failed", error) from error
            event = self._xid_event(data)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        """Frees the event set and shuts NVML down, once; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._event_set is not None:
                    self._nvml.nvmlEventSetFree(self._event_set)
            except self._nvml.NVMLError as error:
                _log.warning("freeing the NVML event set failed: %s", error)
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as error:
                _log.warning("nvmlShutdown failed: %s", error)

    # -- reading ---------------------------------------------------------------------------------

    def _read_gpu(self, index: int) -> GpuReading:
        # Identity fields are required by GpuReading; a device that fails before giving them keeps
        # these empty values, and its ``error`` says why.
        fields: dict[str, Any] = {
            "index": index,
            "uuid": GpuUuid(""),
            "name": "",
            "memory_total_mib": 0,
            "memory_used_mib": 0,
        }
        try:
            self._read_gpu_fields(index, fields)
        except _CallError as failed:
            lost = _code(failed.error) == self._nvml.NVML_ERROR_GPU_IS_LOST
            fields["error"] = "GPU is lost" if lost else str(failed)
            _log.warning("GPU %d (%s): %s", index, fields["uuid"] or "no UUID", failed)
        return GpuReading(**fields)

    def _read_gpu_fields(self, index: int, fields: dict[str, Any]) -> None:
        """Fills ``fields`` call by call, so that a failure keeps everything read before it."""
        nvml = self._nvml
        handle = self._call("nvmlDeviceGetHandleByIndex", index)
        fields["uuid"] = GpuUuid(_text(self._call("nvmlDeviceGetUUID", handle)))
        fields["name"] = _text(self._call("nvmlDeviceGetName", handle))
        memory = self._memory_info(handle)
        fields["memory_total_mib"] = int(memory.total) // _MIB
        fields["memory_used_mib"] = int(memory.used) // _MIB
        mig_mode = self._optional("nvmlDeviceGetMigMode", handle)  # NOT_SUPPORTED: not MIG-capable
        if mig_mode is not None:
            fields["mig_enabled"] = int(mig_mode[0]) == nvml.NVML_DEVICE_MIG_ENABLE
            fields["mig_enabled_after_reset"] = int(mig_mode[1]) == nvml.NVML_DEVICE_MIG_ENABLE
        temperature = self._optional("nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU)
        fields["temperature_c"] = None if temperature is None else int(temperature)
        if not fields.get("mig_enabled"):
            # NVML has no whole-GPU utilization on a MIG-enabled GPU (NOT_SUPPORTED): not even asked.
            rates = self._optional("nvmlDeviceGetUtilizationRates", handle)
            fields["utilization_pct"] = None if rates is None else int(rates.gpu)
        power_mw = self._optional("nvmlDeviceGetPowerUsage", handle)
        fields["power_w"] = None if power_mw is None else int(power_mw) / 1000
        ecc = self._optional(
            "nvmlDeviceGetTotalEccErrors",
            handle,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        fields["ecc_volatile_uncorrected"] = None if ecc is None else int(ecc)
        retired = self._optional("nvmlDeviceGetRetiredPagesPendingStatus", handle)
        fields["retired_pages_pending"] = None if retired is None else bool(retired)
        # (corrected rows, uncorrected rows, isPending, failureOccurred): pre-Ampere GPUs lack it.
        remapped = self._optional("nvmlDeviceGetRemappedRows", handle)
        fields["remapped_rows_pending"] = None if remapped is None else bool(remapped[2])
        if fields.get("mig_enabled"):
            fields["mig_devices"] = self._read_mig_devices(handle, fields["name"], int(memory.total))

    def _read_mig_devices(self, parent: Any, product: str, parent_bytes: int) -> tuple[MigDeviceReading, ...]:
        devices = []
        for slot in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", parent))):
            try:
                mig = self._call("nvmlDeviceGetMigDeviceHandleByIndex", parent, slot)
            except _CallError as failed:
                if _code(failed.error) == self._nvml.NVML_ERROR_NOT_FOUND:
                    continue  # an empty slot: fewer MIG devices than the GPU could hold
                raise
            gi_id = int(self._call("nvmlDeviceGetGpuInstanceId", mig))
            gpu_instance = self._call("nvmlDeviceGetGpuInstanceById", parent, gi_id)
            info = self._call("nvmlGpuInstanceGetInfo", gpu_instance)
            devices.append(
                MigDeviceReading(
                    uuid=GpuUuid(_text(self._call("nvmlDeviceGetUUID", mig))),
                    profile=self._profile_name(parent, product, int(info.profileId), parent_bytes),
                    gpu_instance_id=gi_id,
                    memory_total_mib=int(self._call("nvmlDeviceGetMemoryInfo", mig).total) // _MIB,
                    placement_start=int(info.placement.start),
                    placement_size=int(info.placement.size),
                )
            )
        return tuple(devices)

    def _profile_name(self, parent: Any, product_name: str, profile_id: int, parent_bytes: int) -> str:
        """The catalogue's name for the profile, else NVML's own, else one derived from its size."""
        key = (product_name, profile_id)
        name = self._profile_names.get(key) or catalogue_profile_name(product_name, profile_id)
        if name is None:
            name = self._nvml_profile_name(parent, profile_id, parent_bytes)
            _log.info("%s: GI profile %d is not in the catalogue; named %s", product_name, profile_id, name)
        self._profile_names[key] = name
        return name

    def _nvml_profile_name(self, parent: Any, profile_id: int, parent_bytes: int) -> str:
        nvml = self._nvml
        for index, suffix in sorted(_PROFILE_INDEX_SUFFIXES.items()):
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, index)
            except nvml.NVMLError:
                continue  # a profile this GPU does not have (NOT_SUPPORTED, INVALID_ARGUMENT)
            if int(info.id) != profile_id:
                continue
            own = _text(getattr(info, "name", b"")).removeprefix("MIG ").strip()
            if _PROFILE_NAME.match(own):
                return own
            return derived_profile_name(
                slices=int(info.sliceCount),
                memory_mib=int(info.memorySizeMB),
                device_total_bytes=parent_bytes,
                suffix=suffix,
            )
        return f"gi-profile-{profile_id}"

    def _cuda_version(self) -> str:
        nvml = self._nvml
        get = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None) or nvml.nvmlSystemGetCudaDriverVersion
        try:
            version = int(get())  # 12040 -> "12.4"
        except nvml.NVMLError as error:
            _log.warning("cannot read the CUDA driver version: %s", error)
            return ""
        return f"{version // 1000}.{version % 1000 // 10}"

    # -- events ----------------------------------------------------------------------------------

    def _registered_event_set(self) -> Any:
        """The event set, created on first use with every device that can report XIDs registered."""
        nvml = self._nvml
        with self._lock:
            if self._event_set is not None:
                return self._event_set
            try:
                count = int(nvml.nvmlDeviceGetCount())
                event_set = nvml.nvmlEventSetCreate()
            except nvml.NVMLError as error:
                raise self._host_error("cannot create the NVML event set", error) from error
            for index in range(count):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, event_set)
                except nvml.NVMLError as error:
                    if _code(error) == nvml.NVML_ERROR_NOT_SUPPORTED:
                        _log.info("GPU %d cannot report XID events (%s); not watched", index, error)
                    else:
                        _log.warning("GPU %d: registering for XID events failed: %s", index, error)
            self._event_set = event_set
            return event_set

    def _xid_event(self, data: Any) -> XidEvent | None:
        nvml = self._nvml
        if int(data.eventType) != nvml.nvmlEventTypeXidCriticalError:
            return None
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
        except nvml.NVMLError as error:
            _log.error("XID %d from a GPU whose UUID NVML cannot give (%s)", int(data.eventData), error)
            return None
        return XidEvent(uuid=GpuUuid(uuid), xid=int(data.eventData), at=self._clock())

    # -- calls and errors ------------------------------------------------------------------------

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, function)(*args)
        except self._nvml.NVMLError as error:
            raise _CallError(function, error) from error

    def _memory_info(self, handle: Any) -> Any:
        """Memory as nvidia-smi shows it: the v2 call, whose ``used`` leaves out what the driver
        reserves. The v1 call counts that reservation as used (615 MiB on an idle H200 next to
        nvidia-smi's 0 MiB, docs/hardware.md); it remains the fallback for older drivers."""
        if hasattr(self._nvml, "nvmlMemory_v2"):
            try:
                return self._nvml.nvmlDeviceGetMemoryInfo(handle, version=self._nvml.nvmlMemory_v2)
            except self._nvml.NVMLError as error:
                if _code(error) not in (
                    self._nvml.NVML_ERROR_NOT_SUPPORTED,
                    self._nvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                ):
                    raise _CallError("nvmlDeviceGetMemoryInfo_v2", error) from error
        return self._call("nvmlDeviceGetMemoryInfo", handle)

    def _optional(self, function: str, *args: Any) -> Any:
        """Like ``_call``, but a field this GPU or driver does not have is None rather than an error."""
        try:
            return self._call(function, *args)
        except _CallError as failed:
            absent = (self._nvml.NVML_ERROR_NOT_SUPPORTED, self._nvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            if _code(failed.error) in absent:
                return None
            raise

    def _host_error(self, what: str, error: BaseException) -> NvmlError:
        if _code(error) == self._nvml.NVML_ERROR_GPU_IS_LOST:
            return GpuLostError(f"{what}: {error}")
        return NvmlError(f"{what}: {error}")

    def _check_open(self) -> None:
        if self._closed:
            raise NvmlError("this NvmlSource is closed")
