"""What deserves a notification: conditions found in the inventory and the ledger, told once when
they start and once when they end (PagerDuty resolves them by the same dedup key).

``conditions(...)`` is pure: the conditions true now. ``Watchdog`` compares them with the last
round and hands the changes to a notifier; it runs on a timer in `kgm serve`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from inventory.domain.allocation import Allocation
from inventory.domain.snapshot import InventorySnapshot
from inventory.notify.formats import Event, Notification, Severity


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    overheating_celsius: int = 85
    """A GPU at or above this is reported overheating (the health check's 90 C makes it unhealthy)."""

    daily_cost_threshold: Decimal | None = None
    """Report when the last 24 hours' cost passes this (None: never)."""

    interval_s: float = 15.0


@dataclass(frozen=True, slots=True)
class Condition:
    event: Event
    key: str
    severity: Severity
    summary: str
    details: tuple[tuple[str, str], ...]


def conditions(
    snapshot: InventorySnapshot, daily_cost: Decimal | None, settings: WatchdogSettings
) -> dict[str, Condition]:
    """Every notifiable condition true now, by dedup key."""
    found: dict[str, Condition] = {}
    for name, record in snapshot.nodes.items():
        stale = snapshot.capacity(name).reason
        if stale is not None:
            key = f"{name}/inventory"
            found[key] = Condition(
                Event.INVENTORY_STALE, key, Severity.WARNING, f"node {name}: {stale}", (("node", name),)
            )
        for gpu in record.gpunode.inventory.gpus:
            gpu_id = gpu.uuid or f"GPU {gpu.index}"
            base = (("node", name), ("gpu", gpu_id), ("model", gpu.model.name))
            if not gpu.healthy:
                key = f"{name}/{gpu_id}/failure"
                found[key] = Condition(
                    Event.DEVICE_FAILURE,
                    key,
                    Severity.CRITICAL,
                    f"{gpu_id} on {name} unhealthy: {gpu.unhealthy_reason}",
                    (*base, ("reason", gpu.unhealthy_reason or "")),
                )
            if gpu.temperature_c is not None and gpu.temperature_c >= settings.overheating_celsius:
                key = f"{name}/{gpu_id}/overheating"
                found[key] = Condition(
                    Event.DEVICE_OVERHEATING,
                    key,
                    Severity.WARNING,
                    f"{gpu_id} on {name} at {gpu.temperature_c} C",
                    (*base, ("temperature", f"{gpu.temperature_c} C")),
                )
    threshold = settings.daily_cost_threshold
    if threshold is not None and daily_cost is not None and daily_cost > threshold:
        found["cost/daily"] = Condition(
            Event.COST_THRESHOLD,
            "cost/daily",
            Severity.WARNING,
            f"GPU cost of the last 24 h is {daily_cost:.2f}, over {threshold}",
            (("cost", f"{daily_cost:.2f}"), ("threshold", str(threshold))),
        )
    return found


class Watchdog:
    def __init__(
        self,
        *,
        snapshot: Callable[[], InventorySnapshot],
        daily_cost: Callable[[], Decimal | None],
        notify: Callable[[Notification], object],
        settings: WatchdogSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
        more: Callable[[], dict[str, Condition]] = dict,
    ) -> None:
        """``more``: further conditions true now, by dedup key (the teams' cost budgets)."""
        self._more = more
        self._snapshot = snapshot
        self._daily_cost = daily_cost
        self._notify = notify
        self._settings = settings or WatchdogSettings()
        self._clock = clock
        self._log = logger or logging.getLogger("kgm.watchdog")
        self._active: dict[str, Condition] = {}

    def check(self) -> list[Notification]:
        """One round: notify what started and what ended since the last; what was sent."""
        now = self._clock()
        current = conditions(self._snapshot(), self._daily_cost(), self._settings) | self._more()
        sent = []
        for key, condition in current.items():
            if key not in self._active:
                sent.append(self._send(_notification(condition, now)))
        for key, condition in self._active.items():
            if key not in current:
                sent.append(self._send(_notification(condition, now).resolved(time=now)))
        self._active = current
        return sent

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._settings.interval_s):
            try:
                self.check()
            except Exception as error:  # a failed round is retried at the next interval
                self._log.error(
                    "watchdog round failed", extra={"event": "watchdog.error", "error": str(error)}
                )

    def _send(self, notification: Notification) -> Notification:
        self._notify(notification)
        return notification


def allocation_notification(allocation: Allocation, *, opened: bool, now: datetime) -> Notification:
    """``allocation.created`` / ``allocation.released`` for a ledger row."""
    event = Event.ALLOCATION_CREATED if opened else Event.ALLOCATION_RELEASED
    verb = "holds" if opened else "released"
    return Notification(
        event=event,
        severity=Severity.INFO,
        summary=f"{allocation.namespace}/{allocation.pod} {verb} {allocation.count} x {allocation.resource}"
        + (f" on {allocation.node}" if allocation.node else ""),
        dedup_key=f"allocation/{allocation.id}/{event.value}",
        time=now,
        details={
            "namespace": allocation.namespace,
            "pod": allocation.pod,
            "node": allocation.node or "",
            "resource": allocation.resource,
            "allocation": allocation.id,
            "costPerHour": f"{allocation.hourly_price * allocation.count:.4f}",
        },
    )


def failure_notification(what: str, reason: str, *, now: datetime) -> Notification:
    return Notification(
        event=Event.ALLOCATION_FAILED,
        severity=Severity.WARNING,
        summary=f"{what}: {reason}",
        dedup_key=f"failed/{what}",
        time=now,
        details={"request": what, "reason": reason},
    )


def _notification(condition: Condition, now: datetime) -> Notification:
    return Notification(
        event=condition.event,
        severity=condition.severity,
        summary=condition.summary,
        dedup_key=condition.key,
        time=now,
        details=dict(condition.details),
    )
