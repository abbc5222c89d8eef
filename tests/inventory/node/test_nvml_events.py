"""NvmlSource's Xid events: registered once per device that supports them, every queued Xid collected
with the GPU's uuid and the clock, wait errors deferred to the next call, the event set freed on close.
"""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from inventory.domain.readings import GpuLostError, NvmlError
from inventory.node.nvml import NvmlSource
from tests.inventory.node.fake_nvml import (
    FakeDevice,
    host,
    xid,
)


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
