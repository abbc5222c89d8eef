"""NVML failures become our errors: a missing driver is "unavailable", another init failure an
NvmlError, and whatever single call fails (or every call), a reading or our error comes out, chained to
the library's, never a library exception."""

from __future__ import annotations

import itertools
from typing import Any

import pynvml
import pytest

from inventory.domain.readings import NvmlError, NvmlUnavailableError
from inventory.node.nvml import UNAVAILABLE_MESSAGE, NvmlSource
from tests.inventory.node.fake_nvml import (
    FakeDevice,
    FakeNvml,
    host,
    mig_gpu,
    nvml_error,
    xid,
)


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
