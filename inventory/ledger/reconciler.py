"""The reconciler: pods in, allocation history out, each start and end recorded exactly once.

Watch events open and close allocations as they come. A full resync compares the ledger's open
allocations with a *complete* listing of the cluster's pods and repairs both ways: what is gone
is closed (at the pod's end time where the listing still shows it, at discovery otherwise, flagged
as inferred), what is missing is opened. Restarting the process is a resync, so nothing is lost.

The decisions are pure functions of (pod objects, open allocations, the inventory, prices, now);
``Reconciler`` applies them to a :class:`Ledger`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from inventory.domain.allocation import Allocation, Status, allocation_id
from inventory.domain.events import (
    OVER_COST_LIMIT,
    OVER_MAX_DURATION,
    RESERVATION_LAPSED,
    EventRecorder,
    NoEvents,
    PodEvent,
    PodRef,
)
from inventory.domain.labels import ALLOCATION_ID, TEAM, USER, WORKLOAD_TYPE
from inventory.domain.pods import TERMINAL_PHASES, container_gpus, pod_gpu_total
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.domain.times import parse_time
from inventory.ledger.store import Ledger, LedgerError

#: Looks up a node's shape (its GPU models and resources) in the live inventory; None if unknown.
ShapeLookup = Callable[[str], NodeShape | None]


@dataclass(frozen=True, slots=True)
class PodView:
    """What the reconciler reads from a pod object."""

    uid: str
    namespace: str
    name: str
    node: str | None
    phase: str | None
    resources: Mapping[str, int]
    started: datetime | None
    finished: datetime | None
    deleted: datetime | None
    team: str | None
    user: str | None
    workload_type: str | None
    reservation: str | None

    @property
    def holds_gpus(self) -> bool:
        return bool(self.node) and bool(self.resources) and self.phase not in TERMINAL_PHASES

    @property
    def ended_at(self) -> datetime | None:
        return self.finished or self.deleted


def pod_view(pod: Mapping[str, Any]) -> PodView:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    scheduled = next(
        (
            c.get("lastTransitionTime")
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled"
        ),
        None,
    )
    finished = [
        s.get("state", {}).get("terminated", {}).get("finishedAt")
        for s in (status.get("containerStatuses") or [])
        if (s.get("state") or {}).get("terminated")
    ]
    return PodView(
        uid=str(metadata.get("uid", "")),
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        node=spec.get("nodeName") or None,
        phase=status.get("phase"),
        resources=pod_gpu_total(container_gpus(pod)),
        started=parse_time(scheduled)
        or parse_time(status.get("startTime"))
        or parse_time(metadata.get("creationTimestamp")),
        finished=max((t for t in map(parse_time, finished) if t is not None), default=None),
        deleted=parse_time(metadata.get("deletionTimestamp")),
        team=labels.get(TEAM) or annotations.get(TEAM) or metadata.get("namespace"),
        user=annotations.get(USER),
        workload_type=labels.get(WORKLOAD_TYPE) or annotations.get(WORKLOAD_TYPE),
        reservation=annotations.get(ALLOCATION_ID),
    )


def allocations_for(
    view: PodView, *, shape: NodeShape | None, prices: PriceTable, now: datetime
) -> list[Allocation]:
    """The allocations a pod that holds GPUs stands for: one per kind of GPU resource."""
    models = {resource: (model, share) for resource, model, share in (shape.resources if shape else ())}
    rows = []
    for resource, count in sorted(view.resources.items()):
        model, share = models.get(resource, (None, 1.0))
        hourly = prices.share_hourly(model, share)
        rows.append(
            Allocation(
                id=allocation_id(view.uid, resource),
                namespace=view.namespace,
                pod=view.name,
                pod_uid=view.uid,
                node=view.node,
                resource=resource,
                count=count,
                gpu_model=model,
                hourly_price=hourly if hourly is not None else Decimal(0),
                status=Status.ACTIVE,
                start=view.started or now,
                team=view.team,
                user=view.user,
                workload_type=view.workload_type,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class ResyncPlan:
    starts: list[Allocation] = field(default_factory=list)
    #: (allocation id, end, inferred)
    ends: list[tuple[str, datetime, bool]] = field(default_factory=list)
    expired: list[tuple[str, datetime]] = field(default_factory=list)
    #: Running allocations past their reservation's duration or cost limit: (id, why).
    over_limit: list[tuple[str, str]] = field(default_factory=list)


def plan_resync(
    open_allocations: Iterable[Allocation],
    pods: Iterable[Mapping[str, Any]],
    *,
    shape_of: ShapeLookup,
    prices: PriceTable,
    now: datetime,
) -> ResyncPlan:
    """What makes the ledger agree with a COMPLETE listing of pods (never call it with part of one)."""
    views = {v.uid: v for v in map(pod_view, pods)}
    plan = ResyncPlan()
    # Matched by (pod UID, resource), not by row id: a pod that claimed a reservation holds the
    # reservation's row, whose id is the reservation's.
    holding: dict[tuple[str, str], Allocation] = {}
    finished: list[tuple[Allocation, datetime | None]] = []
    for view in views.values():
        if not view.node or not view.resources:
            continue
        rows = allocations_for(view, shape=shape_of(view.node), prices=prices, now=now)
        if view.holds_gpus:
            holding.update(((view.uid, row.resource), row) for row in rows)
        else:
            finished.extend((row, view.ended_at) for row in rows)
    recorded: set[tuple[str, str]] = set()
    for allocation in open_allocations:
        if allocation.status is Status.RESERVED:
            if allocation.expires_at is not None and allocation.expires_at <= now:
                plan.expired.append((allocation.id, allocation.expires_at))
            continue
        key = (allocation.pod_uid or "", allocation.resource)
        recorded.add(key)
        if key in holding:
            why = over_limit(allocation, now)
            if why is not None:
                plan.over_limit.append((allocation.id, why))
            continue
        listed = views.get(allocation.pod_uid or "")
        ended = listed.ended_at if listed is not None else None
        # A pod still listed but finished ended when it finished; one gone without a trace ended at
        # some moment we did not see: now, flagged as inferred.
        plan.ends.append((allocation.id, ended or now, ended is None))
    plan.starts.extend(row for key, row in holding.items() if key not in recorded)
    # A pod that ran and finished while nobody watched: record its whole life. Inserts skip rows the
    # ledger has (closed or not) and ends skip closed rows, so a known history is left as it is.
    for row, ended in finished:
        if (row.pod_uid or "", row.resource) not in recorded:
            plan.starts.append(row)
            plan.ends.append((row.id, ended or now, ended is None))
    return plan


def over_limit(allocation: Allocation, now: datetime) -> str | None:
    """Why a running allocation has gone past what its reservation allowed, or None."""
    passed = limit_passed(allocation, now)
    return passed[1] if passed else None


def limit_passed(allocation: Allocation, now: datetime) -> tuple[str, str] | None:
    """The limit a running allocation has gone past (its Event reason) and why, or None."""
    if allocation.max_duration_hours is not None:
        hours = (now - allocation.start).total_seconds() / 3600
        if hours > allocation.max_duration_hours:
            why = f"running {hours:.1f} h, past maxDurationHours {allocation.max_duration_hours}"
            return OVER_MAX_DURATION, why
    if allocation.cost_limit is not None:
        cost = allocation.cost(now)
        if cost > allocation.cost_limit:
            return OVER_COST_LIMIT, f"cost {cost:.2f} past costLimit {allocation.cost_limit}"
    return None


def limit_event(allocation: Allocation, now: datetime) -> PodEvent | None:
    """The Event telling a running pod it went past its reservation's limit (kgm does not stop it)."""
    passed = limit_passed(allocation, now)
    if passed is None or not allocation.pod:
        return None
    reason, why = passed
    pod = PodRef(allocation.namespace, allocation.pod, allocation.pod_uid or "")
    message = f"allocation {allocation.id} on {allocation.node}: {why}; the pod keeps running"
    return PodEvent(pod, reason, message, action="Reconcile")


#: Pods told of one lapsed reservation, at most (those that claim it, and the one it was made for).
_LAPSE_TOLD = 10


def lapse_events(reservation: Allocation, at: datetime, pods: Iterable[PodView]) -> list[PodEvent]:
    """Events for the pods that claim ``reservation`` (``gpu.kgm.io/allocation-id``) or that it was made
    for, now that it lapsed unclaimed: the hold is gone, such a pod is scheduled like any other."""
    told = [
        view
        for view in pods
        if view.namespace == reservation.namespace
        and (view.reservation == reservation.id or (reservation.pod and view.name == reservation.pod))
    ][:_LAPSE_TOLD]
    message = (
        f"reservation {reservation.id} ({reservation.count} x {reservation.resource} on {reservation.node}) "
        f"lapsed unclaimed at {at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}; its hold is released"
    )
    return [
        PodEvent(PodRef(view.namespace, view.name, view.uid), RESERVATION_LAPSED, message, action="Expire")
        for view in told
    ]


class Reconciler:
    """Applies pod events and resyncs to the ledger. Thread-safe; only acts while ``is_leader()``."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        shape_of: ShapeLookup,
        prices: PriceTable,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        is_leader: Callable[[], bool] = lambda: True,
        logger: logging.Logger | None = None,
        on_error: Callable[[], None] = lambda: None,
        observe_write: Callable[[float], None] = lambda seconds: None,
        on_change: Callable[[Allocation, bool], None] = lambda allocation, opened: None,
        events: EventRecorder | None = None,
    ) -> None:
        """``on_error`` and ``observe_write`` (seconds per ledger write) feed the metrics;
        ``on_change(allocation, opened)`` hears of every allocation opened or closed by an event;
        ``events`` tells pods what a resync finds (over a limit, reservation lapsed)."""
        self._on_change = on_change
        self._events = events or NoEvents()
        self._ledger = ledger
        self._shape_of = shape_of
        self._prices = prices
        self._clock = clock
        self._is_leader = is_leader
        self._log = logger or logging.getLogger("kgm.reconciler")
        self._on_error = on_error
        self._observe_write = observe_write
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def on_pod(self, event_type: str, pod: Mapping[str, Any]) -> None:
        if not self._is_leader():
            return
        view = pod_view(pod)
        if not view.resources or not view.uid:
            return
        now = self._clock()
        try:
            with self._lock:
                if event_type != "DELETED" and view.holds_gpus:
                    self._open(view, now)
                elif view.node:
                    ended = view.ended_at if event_type != "DELETED" else (view.deleted or view.finished)
                    for resource in view.resources:
                        with self._write():
                            closed = self._ledger.record_end(
                                allocation_id(view.uid, resource), ended or now, inferred=ended is None
                            )
                        row = self._ledger.get(allocation_id(view.uid, resource)) if closed else None
                        if row is not None:
                            self._on_change(row, False)
        except LedgerError as error:
            self._on_error()
            self._log.error(
                "ledger write failed; the next resync repairs it",
                extra={
                    "event": "reconciler.error",
                    "pod": f"{view.namespace}/{view.name}",
                    "error": str(error),
                },
            )

    def _open(self, view: PodView, now: datetime) -> None:
        for row in allocations_for(view, shape=self._shape_of(view.node or ""), prices=self._prices, now=now):
            if view.reservation and self._ledger.claim(
                view.reservation,
                namespace=view.namespace,
                pod=view.name,
                pod_uid=view.uid,
                resource=row.resource,
                start=row.start,
            ):
                continue  # the reservation's row is now this pod's allocation
            with self._write():
                opened = self._ledger.record_start(row)
            if opened:
                self._on_change(row, True)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self._observe_write(time.perf_counter() - started)

    def resync(self, pods: Iterable[Mapping[str, Any]], resource_version: str = "") -> ResyncPlan | None:
        """Make the ledger agree with ``pods``, a complete listing (the reflector's relist gives one)."""
        if not self._is_leader():
            return None
        pods = list(pods)
        try:
            with self._lock:
                now = self._clock()
                open_rows = {a.id: a for a in self._ledger.open_allocations()}
                plan = plan_resync(
                    open_rows.values(),
                    pods,
                    shape_of=self._shape_of,
                    prices=self._prices,
                    now=now,
                )
                self._ledger.record_many(plan.starts, plan.ends)
                lapsed = []
                for reservation, at in plan.expired:
                    if self._ledger.end_reservation(reservation, at, status=Status.EXPIRED):
                        lapsed.append(self._ledger.get(reservation))
        except LedgerError as error:
            self._on_error()
            self._log.error("resync failed", extra={"event": "reconciler.resync_failed", "error": str(error)})
            return None
        for allocation, why in plan.over_limit:
            if allocation not in self._warned:  # an event once, not at every resync
                self._warned.add(allocation)
                self._log.warning(
                    "allocation over its limit",
                    extra={"event": "allocation.over_limit", "allocation": allocation, "reason": why},
                )
                told = limit_event(open_rows[allocation], now)
                if told is not None:
                    self._events.record(told)
        for row in lapsed:  # announced when made: its end is announced too, as a release's is
            if row is not None:
                self._on_change(row, False)
        if plan.expired:
            views = [pod_view(pod) for pod in pods]
            for reservation, at in plan.expired:
                for told in lapse_events(open_rows[reservation], at, views):
                    self._events.record(told)
        self._log.info(
            "resync done",
            extra={
                "event": "reconciler.resync",
                "pods": len(pods),
                "opened": len(plan.starts),
                "closed": len(plan.ends),
                "inferred": sum(1 for *_, inferred in plan.ends if inferred),
                "expired": len(plan.expired),
            },
        )
        return plan
