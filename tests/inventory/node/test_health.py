"""GPU health from XIDs and readings, with hysteresis: table tests on a hand-driven clock."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inventory.domain.health import PENDING_REMAPPING, PENDING_RETIREMENT, GpuHealth, HealthSettings
from inventory.domain.readings import GpuReading, GpuUuid, XidEvent
from inventory.node.fake_gpu import FakeGpuSource
from inventory.node.health import HealthTracker

GPU = GpuUuid("GPU-aaaaaaaa-0000-0000-0000-000000000000")
OTHER = GpuUuid("GPU-bbbbbbbb-0000-0000-0000-000000000000")
NEW_YEAR_2026 = 1767225600.0  # wall time when the monotonic clock reads 0 in these tests


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tracker(settings: HealthSettings | None = None) -> tuple[HealthTracker, Clock]:
    clock = Clock()
    return HealthTracker(settings, clock=clock, wall_clock=lambda: NEW_YEAR_2026 + clock.now), clock


def reading(uuid: GpuUuid = GPU, **fields: Any) -> GpuReading:
    """A well GPU at 40 C unless ``fields`` say otherwise."""
    fields = {"temperature_c": 40, **fields}
    return GpuReading(
        index=0, uuid=uuid, name="NVIDIA H100 80GB HBM3", memory_total_mib=81559, memory_used_mib=0, **fields
    )


def health_after(
    events: list[tuple[float, int]], now: float, settings: HealthSettings | None = None
) -> GpuHealth:
    health, clock = tracker(settings)
    for at, xid in events:
        clock.now = max(clock.now, at)  # each event is recorded when it is seen
        health.record(XidEvent(uuid=GPU, xid=xid, at=at))
    clock.now = now
    return health.observe(reading())


@pytest.mark.parametrize("xid", sorted(HealthSettings().application_xids))
def test_application_xids_never_make_a_gpu_unhealthy(xid: int) -> None:
    assert health_after([(10.0, xid)], now=11.0) == GpuHealth(healthy=True)


@pytest.mark.parametrize(
    ("events", "now", "healthy", "reason"),
    [
        pytest.param([], 0.0, True, None, id="no-events"),
        pytest.param(
            [(100.0, 79)],
            101.0,
            False,
            "XID 79 at 2026-01-01T00:01:40Z (GPU has fallen off the bus)",
            id="fell-off",
        ),
        pytest.param(
            [(100.0, 48)], 101.0, False, "XID 48 at 2026-01-01T00:01:40Z (double-bit ECC error)", id="dbe"
        ),
        pytest.param([(100.0, 999)], 101.0, False, "XID 999 at 2026-01-01T00:01:40Z", id="unknown-meaning"),
        pytest.param([(100.0, 79)], 699.9, False, "XID 79", id="still-in-clean-period"),
        pytest.param([(100.0, 79)], 700.0, True, None, id="recovered-after-clean-period"),
        pytest.param(
            [(100.0, 79), (500.0, 94)], 1000.0, False, "XID 94 at 2026-01-01T00:08:20Z", id="new-xid-restarts"
        ),
        pytest.param([(100.0, 79), (500.0, 94)], 1100.0, True, None, id="recovered-after-restart"),
        pytest.param([(100.0, 79), (500.0, 43)], 800.0, True, None, id="app-xid-does-not-restart"),
        pytest.param([(500.0, 94), (100.0, 79)], 600.0, False, "XID 94", id="older-event-never-replaces"),
    ],
)
def test_critical_xids_make_a_gpu_unhealthy_until_a_clean_period_passes(
    events: list[tuple[float, int]], now: float, healthy: bool, reason: str | None
) -> None:
    health = health_after(events, now)
    assert health.healthy is healthy
    if reason is None:
        assert health.reason is None
    else:
        assert health.reason is not None and health.reason.startswith(reason)


def test_the_clean_period_is_a_setting() -> None:
    settings = HealthSettings(recovery_seconds=60.0)
    assert not health_after([(0.0, 79)], now=59.0, settings=settings).healthy
    assert health_after([(0.0, 79)], now=60.0, settings=settings).healthy


def test_an_xid_affects_only_the_gpu_whose_uuid_nvml_gave() -> None:
    health, clock = tracker()
    health.record(XidEvent(uuid=GPU, xid=79, at=0.0))
    health.record(XidEvent(uuid=GpuUuid("MIG-cccccccc-0000-0000-0000-000000000000"), xid=79, at=0.0))
    clock.now = 1.0
    assert not health.observe(reading(GPU)).healthy
    assert health.observe(reading(OTHER)).healthy


@pytest.mark.parametrize(
    ("temperatures", "healthy"),
    [
        pytest.param([89], [True], id="below-limit"),
        pytest.param([90], [False], id="at-limit"),
        pytest.param([93, 88, 86, 85, 89], [False, False, False, True, True], id="cools-5-below-to-recover"),
        pytest.param([91, 89, 90, 86, 84], [False, False, False, False, True], id="re-heats-in-band"),
        pytest.param([93, None, 84], [False, False, True], id="no-reading-keeps-state"),
        pytest.param([None, 50], [True, True], id="never-hot"),
    ],
)
def test_temperature_has_a_band_so_a_gpu_at_the_limit_does_not_flap(
    temperatures: list[int | None], healthy: list[bool]
) -> None:
    health, _ = tracker()
    assert [health.observe(reading(temperature_c=t)).healthy for t in temperatures] == healthy


def test_temperature_reasons_say_the_limit_and_when_it_recovers() -> None:
    health, _ = tracker()
    assert health.observe(reading(temperature_c=93)).reason == "temperature 93 C >= 90 C"
    assert health.observe(reading(temperature_c=88)).reason == (
        "temperature 88 C, cooling down from >= 90 C: healthy again at 85 C or below"
    )


def test_the_temperature_limit_and_band_are_settings() -> None:
    health, _ = tracker(HealthSettings(max_temperature_c=80, temperature_hysteresis_c=10))
    assert [health.observe(reading(temperature_c=t)).healthy for t in (80, 71, 70)] == [False, False, True]


@pytest.mark.parametrize(
    ("fields", "healthy", "reason"),
    [
        pytest.param({}, True, None, id="all-well"),
        pytest.param({"retired_pages_pending": True}, False, PENDING_RETIREMENT, id="pending-retirement"),
        pytest.param({"remapped_rows_pending": True}, False, PENDING_REMAPPING, id="pending-remap"),
        pytest.param(
            {"retired_pages_pending": None, "remapped_rows_pending": False}, True, None, id="not-pending"
        ),
        pytest.param(
            {"error": "GPU is lost", "temperature_c": None}, False, "GPU is lost", id="device-error"
        ),
        pytest.param(
            {"error": "GPU is lost", "retired_pages_pending": True},
            False,
            "GPU is lost; pending page retirement: reset the GPU",
            id="every-reason-given",
        ),
    ],
)
def test_a_readings_own_signals_decide_health(
    fields: dict[str, Any], healthy: bool, reason: str | None
) -> None:
    health, _ = tracker()
    assert health.observe(reading(**fields)) == GpuHealth(healthy=healthy, reason=reason)


def test_the_defaults_follow_nvidias_device_plugin_list_of_application_xids() -> None:
    settings = HealthSettings()
    assert settings.application_xids == {13, 31, 43, 45, 68, 109}
    assert (settings.recovery_seconds, settings.max_temperature_c) == (600.0, 90)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.recovery_seconds = 1.0  # type: ignore[misc]


def test_a_fake_gpu_falling_off_the_bus_is_unhealthy_then_recovers() -> None:
    clock = Clock()
    source = FakeGpuSource.from_cluster_file("demo", "gpu-a100-01", clock=clock)
    health = HealthTracker(HealthSettings(), clock=clock, wall_clock=lambda: NEW_YEAR_2026 + clock.now)
    source.inject_xid(3, 79)
    for event in source.poll_events(0.0):
        health.record(event)
    clock.now = 10.0
    verdicts = [health.observe(gpu) for gpu in source.read().gpus]
    assert [v.healthy for v in verdicts] == [True, True, True, False, True, True, True, True]
    assert verdicts[3].reason == "XID 79 at 2026-01-01T00:00:00Z (GPU has fallen off the bus)"
    clock.now = 600.0
    assert all(health.observe(gpu).healthy for gpu in source.read().gpus)
