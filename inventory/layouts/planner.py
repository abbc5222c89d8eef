"""The MIG planner's loop in `kgm serve`: every ``interval_s``, the live inventory and the workload
signals become the planner's input (``inventory.domain.mig_inputs``), ``plan_layouts`` decides, and
the plan is shown (REST, metrics, one ``mig.plan`` log line per new decision); in apply mode the
replica holding the Lease hands each changed node to the :class:`~inventory.layouts.applier.MigApplier`.

Every replica plans (any of them may answer the REST call); only the leader applies, and only it
knows when it last changed a node (a new leader learns what is under way from the MIG manager's
state labels, which hold a node back while ``pending``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.mig_candidates import describe
from inventory.domain.mig_inputs import node_plan_state
from inventory.domain.mig_plan import GpuChange, MigDemand, MigPlan, NodeHold, NodePlanState, plan_layouts
from inventory.domain.model import GpuDevice, NodeName
from inventory.domain.snapshot import InventorySnapshot
from inventory.layouts.metrics import PlanMetrics
from inventory.layouts.settings import LayoutSettings, PlannerMode
from inventory.layouts.signals import MigLabels, WorkloadSignals

if TYPE_CHECKING:
    from inventory.layouts.applier import Applying, MigApplier

logger = logging.getLogger("kgm.layouts")


@dataclass(frozen=True, slots=True)
class PlanView:
    """What the REST endpoint and the metrics show: the last round's plan and what is being applied."""

    mode: PlannerMode
    planned_at: datetime | None = None
    plan: MigPlan | None = None
    #: Whether this replica applies (apply mode and the Lease held) at the last round.
    applies: bool = False
    applying: tuple[Applying, ...] = ()


class LayoutPlanner:
    def __init__(
        self,
        *,
        snapshot: Callable[[], InventorySnapshot],
        signals: WorkloadSignals,
        settings: LayoutSettings,
        metrics: PlanMetrics,
        applier: MigApplier | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: logging.Logger = logger,
    ) -> None:
        """``applier``: given in apply mode only (nothing else writes to the cluster)."""
        self._snapshot = snapshot
        self._signals = signals
        self._settings = settings
        self._metrics = metrics
        self._applier = applier if settings.mode is PlannerMode.APPLY else None
        self._is_leader = is_leader
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = log
        self._last_changed: dict[NodeName, float] = {}
        #: Nodes whose change nobody carried out (timed out): not asked again until a restart, or
        #: they would spend most of their time pending, with no MIG pods.
        self._given_up: set[NodeName] = set()
        self._seen: frozenset[tuple[str, ...]] = frozenset()
        self._view = PlanView(mode=settings.mode)
        self._lock = threading.Lock()

    def view(self) -> PlanView:
        with self._lock:
            return self._view

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: a round every ``interval_s`` (a failed round is logged; the next one retries)."""
        while not stop.wait(self._settings.interval_s):
            self.round_logged()

    def round_logged(self) -> None:
        try:
            self.round()
        except Exception:
            self._log.exception("MIG planning round failed", extra={"event": "mig.plan_failed"})

    def round(self) -> MigPlan | None:
        """One round: finish what is being applied, plan, show, and (apply mode, leader) apply."""
        snapshot = self._snapshot()
        if not (snapshot.synced and self._signals.synced()):
            return None
        labels = self._signals.labels()
        shown = {name: record.gpunode.inventory.gpus for name, record in snapshot.nodes.items()}
        applies = self._applier is not None and self._is_leader()
        if self._applier is not None:
            self._finish(self._applier, shown, labels, may_write=applies)
        applying = self._applier.applying if self._applier is not None else {}
        states = self._states(snapshot, labels, set(applying))
        demand = self._signals.demand()
        now = self._clock()
        plan = plan_layouts(states, demand, now_s=now, settings=self._settings.plan)
        self._show(plan, demand)
        if applies and self._applier is not None:
            self._apply(self._applier, plan, shown, labels)
        with self._lock:
            self._view = PlanView(
                mode=self._settings.mode,
                planned_at=self._wall_clock(),
                plan=plan,
                applies=applies,
                applying=tuple(self._applier.applying.values()) if self._applier is not None else (),
            )
        return plan

    def _states(
        self, snapshot: InventorySnapshot, labels: Mapping[NodeName, MigLabels], applying: set[NodeName]
    ) -> list[NodePlanState]:
        now, wall = self._clock(), self._wall_clock()
        states = []
        for name, record in sorted(snapshot.nodes.items()):
            capacity = snapshot.capacity(name)
            if not capacity.schedulable:
                continue  # a stale report is no ground to change a node on
            states.append(
                node_plan_state(
                    name,
                    record.gpunode.inventory.gpus,
                    record.gpunode.assignments,
                    capacity.shape,
                    mig_state=labels.get(name, MigLabels()).state,
                    last_changed_s=self._changed_s(name, labels.get(name, MigLabels()), now, wall),
                    reconfiguring=name in applying,
                )
            )
        return states

    def _changed_s(self, name: NodeName, labels: MigLabels, now: float, wall: datetime) -> float | None:
        """When the node last changed, on our clock: our own memory, else the annotation the leader
        of the time wrote (a new leader keeps the minimum time between changes)."""
        if name in self._last_changed:
            return self._last_changed[name]
        if labels.changed_at is None:
            return None
        return now - max(0.0, (wall - labels.changed_at).total_seconds())

    def _show(self, plan: MigPlan, demand: MigDemand) -> None:
        """One log line and one count per decision not already made last round."""
        seen: set[tuple[str, ...]] = set()
        for change in plan.changes:
            key: tuple[str, ...] = (
                "change",
                change.node,
                str(change.gpu),
                describe(change.before),
                describe(change.after),
            )
            seen.add(key)
            if key in self._seen:
                continue
            self._metrics.decisions.labels("change", change_class(change, demand)).inc()
            self._log.info(
                "MIG layout change %s: %s",
                "to apply" if self._applier is not None and self._is_leader() else "recommended",
                change.reason,
                extra={
                    "event": "mig.plan",
                    "decision": "change",
                    "node": change.node,
                    "gpu": change.gpu,
                    "before": describe(change.before),
                    "after": describe(change.after),
                    "reason": change.reason,
                },
            )
        for hold in plan.held_back:
            # By class, not text: a reason such as "changed 40 s ago" words itself anew every round.
            hold_key: tuple[str, ...] = ("hold", hold.node, hold_class(hold))
            seen.add(hold_key)
            if hold_key in self._seen:
                continue
            self._metrics.decisions.labels("hold", hold_class(hold)).inc()
            self._log.info(
                "MIG layout of %s left alone: %s",
                hold.node,
                hold.reason,
                extra={"event": "mig.plan", "decision": "hold", "node": hold.node, "reason": hold.reason},
            )
        self._seen = frozenset(seen)

    def _apply(
        self,
        applier: MigApplier,
        plan: MigPlan,
        shown: dict[NodeName, tuple[GpuDevice, ...]],
        labels: Mapping[NodeName, MigLabels],
    ) -> None:
        by_node: dict[NodeName, list[GpuChange]] = {}
        for change in plan.changes:
            by_node.setdefault(change.node, []).append(change)
        for node, changes in by_node.items():
            if node in self._given_up:
                continue
            try:
                applying = applier.start(node, shown[node], changes, labels=labels)
            except Exception as error:  # the API server's refusal: the next round plans again
                self._metrics.applied.labels("error").inc()
                self._log.error(
                    "MIG layout of %s not applied: %s",
                    node,
                    error,
                    extra={"event": "mig.apply_failed", "node": node, "error": str(error)},
                )
                continue
            self._last_changed[node] = applying.started_s
            self._log.info(
                "MIG layout of %s asked for: config %s",
                node,
                applying.config,
                extra={"event": "mig.apply_started", "node": node, "config": applying.config},
            )

    def _finish(
        self,
        applier: MigApplier,
        shown: dict[NodeName, tuple[GpuDevice, ...]],
        labels: Mapping[NodeName, MigLabels],
        *,
        may_write: bool,
    ) -> None:
        for outcome in applier.check(shown, labels, may_write=may_write):
            node = outcome.applying.node
            if outcome.result == "timed_out":
                self._given_up.add(node)
            self._metrics.applied.labels(outcome.result).inc()
            level = logging.INFO if outcome.result == "applied" else logging.ERROR
            self._log.log(
                level,
                "MIG layout of %s %s after %.0f s",
                node,
                outcome.result.replace("_", " "),
                outcome.seconds,
                extra={
                    "event": "mig.apply_done",
                    "node": node,
                    "config": outcome.applying.config,
                    "result": outcome.result,
                    "seconds": round(outcome.seconds, 1),
                },
            )


def change_class(change: GpuChange, demand: MigDemand) -> str:
    """``waiting`` when the change makes room a waiting pod asks for, else ``recent-mix``."""
    before = Counter(i.profile.resource_name for i in change.before or ())
    after = Counter(i.profile.resource_name for i in change.after or ())
    if change.after is None:
        after[FULL_GPU_RESOURCE] += 1
    if change.before is None:
        before[FULL_GPU_RESOURCE] += 1
    gained = {r for r in after if after[r] > before[r]}
    return "waiting" if any(demand.waiting.get(r, 0) > 0 for r in gained) else "recent-mix"


_HOLD_CLASSES: Sequence[tuple[str, str]] = (
    ("MIG manager state", "mig-manager"),
    ("a change is still being applied", "reconfiguring"),
    ("changed ", "too-soon"),
    ("budget of", "gpu-budget"),
)


def hold_class(hold: NodeHold) -> str:
    """A bounded label for why a node was held back (the reason itself is in the log line)."""
    for prefix, name in _HOLD_CLASSES:
        if hold.reason.startswith(prefix):
            return name
    return "node-budget" if "still reconfiguring" in hold.reason else "other"
