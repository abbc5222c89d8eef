"""Each GPU's health over time, on the node: XIDs recorded as they come, readings observed each poll.

The rule (which XIDs count, recovery after a clean period, the temperature band) and what comes out
(:class:`GpuHealth`) are in ``inventory.domain.health``; this keeps the per-GPU state between polls,
on injected clocks, behind a lock, since the event thread and the reading loop both touch it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from inventory.domain.health import (
    PENDING_REMAPPING,
    PENDING_RETIREMENT,
    XID_MEANINGS,
    GpuHealth,
    HealthSettings,
)
from inventory.domain.readings import GpuReading, GpuUuid, XidEvent


@dataclass(slots=True)
class _GpuState:
    xid: int | None = None
    #: When the last critical XID was seen: on the monotonic clock (for recovery) and as wall time.
    xid_at: float = 0.0
    xid_wall: float = 0.0
    hot: bool = False


class HealthTracker:
    """Per-GPU health state keyed by physical GPU UUID (the UUID NVML gives XID events).

    ``record`` may be called from the event thread while ``observe`` runs on the reading loop.
    """

    def __init__(
        self,
        settings: HealthSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings if settings is not None else HealthSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._states: dict[GpuUuid, _GpuState] = {}
        self._lock = threading.Lock()

    def record(self, event: XidEvent) -> None:
        """Takes in an XID; application XIDs are ignored, an older event never replaces a newer one."""
        if event.xid in self._settings.application_xids:
            return
        # event.at is on the monotonic clock; the wall time is only for the reason people read.
        wall = self._wall_clock() - (self._clock() - event.at)
        with self._lock:
            state = self._states.setdefault(event.uuid, _GpuState())
            if state.xid is None or event.at >= state.xid_at:
                state.xid, state.xid_at, state.xid_wall = event.xid, event.at, wall

    def observe(self, reading: GpuReading) -> GpuHealth:
        """The GPU's health now: its reading's own signals combined with its recent XIDs."""
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(reading.uuid, _GpuState())
            reasons = [reading.error] if reading.error else []
            xid_reason = self._xid_reason(state, now)
            if xid_reason:
                reasons.append(xid_reason)
            if reading.retired_pages_pending:
                reasons.append(PENDING_RETIREMENT)
            if reading.remapped_rows_pending:
                reasons.append(PENDING_REMAPPING)
            temperature_reason = self._temperature_reason(state, reading.temperature_c)
            if temperature_reason:
                reasons.append(temperature_reason)
        return GpuHealth(healthy=not reasons, reason="; ".join(reasons) or None)

    def _xid_reason(self, state: _GpuState, now: float) -> str | None:
        if state.xid is None:
            return None
        if now - state.xid_at >= self._settings.recovery_seconds:
            state.xid = None  # the clean period is over
            return None
        at = datetime.fromtimestamp(state.xid_wall, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meaning = XID_MEANINGS.get(state.xid)
        return f"XID {state.xid} at {at}" + (f" ({meaning})" if meaning else "")

    def _temperature_reason(self, state: _GpuState, celsius: int | None) -> str | None:
        limit = self._settings.max_temperature_c
        cool = limit - self._settings.temperature_hysteresis_c
        if celsius is not None:  # no reading: keep the last state rather than guess
            if celsius >= limit:
                state.hot = True
            elif celsius <= cool:
                state.hot = False
        if not state.hot:
            return None
        if celsius is not None and celsius >= limit:
            return f"temperature {celsius} C >= {limit} C"
        now = "unknown" if celsius is None else f"{celsius} C"
        return f"temperature {now}, cooling down from >= {limit} C: healthy again at {cool} C or below"
