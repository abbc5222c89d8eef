"""The live inventory every controller replica keeps: GpuNode objects, GPU pods, node labels, and
allocations assumed between bind and the pod showing up bound.

Writers are the watch threads (one per resource); readers (extender, webhook, metrics) take an
immutable :class:`InventorySnapshot` and never see a half-applied update. Capacity is pessimistic,
like kube-scheduler's own cache: an assumed allocation holds room until the watch confirms the pod
or its time runs out, so two pods in a row never get the same last slice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from inventory.domain.catalogue import Catalogue
from inventory.domain.gpunode import ParsedGpuNode, parse_gpunode
from inventory.domain.labels import MIG_CONFIG_STATE_LABEL
from inventory.domain.model import ClusterInventory, NodeName
from inventory.domain.offer import Offer, offer_of
from inventory.domain.pods import TERMINAL_PHASES
from inventory.domain.prices import PriceTable
from inventory.domain.shape import (
    MIG_AWAITING_REPORT,
    MIG_UNSETTLED_STATES,
    NodeShape,
    node_allocatable,
    pod_requests,
    room_of,
    shape_of,
)
from inventory.domain.snapshot import (
    AssumedAllocation,
    CacheSettings,
    InventorySnapshot,
    NodeRecord,
    NodeState,
    PodAllocation,
    pod_allocation,
)
from inventory.live.journal import ChangeJournal


class InventoryCache:
    """Thread-safe: one lock around writers; readers take snapshots."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        settings: CacheSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._catalogue = catalogue
        self._settings = settings or CacheSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._nodes: dict[NodeName, NodeRecord] = {}
        self._pods: dict[str, PodAllocation] = {}
        self._allocated: dict[NodeName, dict[str, int]] = {}
        self._assumed: dict[str, AssumedAllocation] = {}
        self._mig_states: dict[NodeName, str] = {}
        # Nodes whose MIG manager turned to success while we watched, with the GpuNode generation seen
        # then: their MIG instances count again only from the agent's next report (the one before may
        # still list the old layout's instances).
        self._awaiting_report: dict[NodeName, int | None] = {}
        self._states: dict[NodeName, NodeState] = {}
        self._shape_ids: dict[NodeShape, int] = {}
        self._shape_epoch = 0
        # Every change of a node's state, so readers keeping per-node results redo only those nodes.
        self._journal = ChangeJournal()
        self._allocated_total: dict[str, int] = {}
        self._synced: set[str] = set()
        self._snapshot: InventorySnapshot | None = None
        # CPU and memory for the placement policy: allocatable per node, requests per bound pod
        self._allocatable: dict[NodeName, tuple[int, int]] = {}
        self._requests: dict[str, tuple[NodeName, int, int]] = {}
        self._requested: dict[NodeName, tuple[int, int]] = {}

    # -- GpuNode objects ---------------------------------------------------------------------------

    def replace_gpunodes(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        """Set the complete list of GpuNodes (after a list or relist): missing ones are gone."""
        parsed = [parse_gpunode(obj, self._catalogue) for obj in items]
        with self._lock:
            old = self._nodes
            self._nodes = {p.inventory.name: self._record(p, old.get(p.inventory.name)) for p in parsed}
            self._states = {}
            for name in self._nodes:
                self._refresh(name)
            self._journal.reset()  # nodes gone from the list left no trace: nobody can catch up by name
            self._synced.add("gpunodes")
            self._snapshot = None

    def apply_gpunode(self, event_type: str, obj: Mapping[str, Any]) -> None:
        parsed = parse_gpunode(obj, self._catalogue)
        name = parsed.inventory.name
        with self._lock:
            if event_type == "DELETED":
                self._nodes.pop(name, None)
                self._awaiting_report.pop(name, None)
            else:
                self._nodes[name] = self._record(parsed, self._nodes.get(name))
                if name in self._awaiting_report and self._awaiting_report[name] != parsed.generation:
                    del self._awaiting_report[name]  # the agent's first report since the change
            self._refresh(name)
            self._snapshot = None

    def _record(self, parsed: ParsedGpuNode, previous: NodeRecord | None) -> NodeRecord:
        now = self._clock()
        if previous is not None:
            if previous.gpunode.generation == parsed.generation:
                return NodeRecord(gpunode=parsed, seen_at=previous.seen_at)
            return NodeRecord(gpunode=parsed, seen_at=now)
        # First sight (a restart of this cache): trust the agent's own heartbeat time for how old
        # the object already is, so a node that went silent before the restart is not made fresh.
        # Later changes are timed on our clock alone, immune to clock skew between machines.
        age = 0.0
        if parsed.heartbeat_time is not None:
            age = max(0.0, (self._wall_clock() - parsed.heartbeat_time).total_seconds())
        return NodeRecord(gpunode=parsed, seen_at=now - age)

    # -- Pods --------------------------------------------------------------------------------------

    def replace_pods(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        items = list(items)
        allocations = [a for a in map(pod_allocation, items) if a is not None]
        requests = [r for r in map(_requests_of, items) if r is not None]
        with self._lock:
            self._requests, self._requested = {}, {}
            for uid, request in requests:
                self._request(uid, request)
            self._pods = {a.uid: a for a in allocations}
            self._allocated, self._allocated_total = {}, {}
            for allocation in allocations:
                self._assumed.pop(allocation.uid, None)
                self._add(allocation.node, allocation.resources, +1)
            for assumption in self._assumed.values():
                self._add(assumption.node, assumption.resources, +1)
            for name in self._nodes:
                self._refresh(name)
            self._synced.add("pods")
            self._snapshot = None

    def apply_pod(self, event_type: str, obj: Mapping[str, Any]) -> None:
        uid = str(obj.get("metadata", {}).get("uid", ""))
        allocation = None if event_type == "DELETED" else pod_allocation(obj)
        requested = None if event_type == "DELETED" else _requests_of(obj)
        with self._lock:
            self._request(uid, requested[1] if requested else None)
            previous = self._pods.pop(uid, None)
            if previous is not None:
                self._add(previous.node, previous.resources, -1)
            if allocation is not None:
                self._pods[uid] = allocation
                assumption = self._assumed.pop(uid, None)  # the watch confirms the bind
                if assumption is None or not _same(assumption, allocation):
                    self._add(allocation.node, allocation.resources, +1)
                    if assumption is not None:
                        self._add(assumption.node, assumption.resources, -1)
            self._snapshot = None

    def _request(self, uid: str, request: tuple[NodeName, int, int] | None) -> None:
        """Count (or stop counting) a bound pod's CPU and memory requests on its node."""
        old = self._requests.pop(uid, None)
        if old is not None:
            self._count(old, -1)
        if request is not None:
            self._requests[uid] = request
            self._count(request, +1)

    def _count(self, request: tuple[NodeName, int, int], sign: int) -> None:
        node, cpu, memory = request
        if not cpu and not memory:
            return  # nothing to count (and the node's shape stays: one bind, one recomputed shape)
        had = self._requested.get(node, (0, 0))
        self._requested[node] = (had[0] + sign * cpu, had[1] + sign * memory)
        self._refresh(node)

    def _add(self, node: NodeName, resources: Mapping[str, int], sign: int) -> None:
        held = self._allocated.setdefault(node, {})
        for resource, count in resources.items():
            held[resource] = held.get(resource, 0) + sign * count
            if held[resource] <= 0:
                del held[resource]
            self._allocated_total[resource] = self._allocated_total.get(resource, 0) + sign * count
            if self._allocated_total[resource] <= 0:
                del self._allocated_total[resource]
        if not held:
            del self._allocated[node]
        self._refresh(node)

    def _refresh(self, name: NodeName) -> None:
        """Recompute one node's shape (after anything about it changed)."""
        record = self._nodes.get(name)
        if record is None:
            if self._states.pop(name, None) is not None:
                self._journal.note(name)
            return
        shape = shape_of(
            record.gpunode.inventory.gpus,
            self._allocated.get(name, {}),
            MIG_AWAITING_REPORT if name in self._awaiting_report else self._mig_states.get(name),
            hot_celsius=self._settings.hot_celsius,
            room=room_of(self._allocatable.get(name), self._requested.get(name, (0, 0))),
        )
        previous = self._states.get(name)
        if (
            previous is not None
            and previous.shape == shape
            and previous.shape.room == shape.room  # not part of a shape's identity
            and previous.seen_at == record.seen_at
        ):
            return
        self._states[name] = NodeState(shape=shape, shape_id=self._intern(shape), seen_at=record.seen_at)
        self._journal.note(name)

    def _intern(self, shape: NodeShape) -> int:
        found = self._shape_ids.get(shape)
        if found is not None:
            return found
        if len(self._shape_ids) > 4 * len(self._nodes) + 1024:
            # Shapes no node has any more pile up as allocations come and go: renumber the live
            # ones under a new epoch (readers drop memos keyed by old ids when the epoch changes).
            self._shape_epoch += 1
            self._journal.reset()
            self._shape_ids = {}
            for node, state in self._states.items():
                state_id = self._shape_ids.setdefault(state.shape, len(self._shape_ids))
                self._states[node] = NodeState(shape=state.shape, shape_id=state_id, seen_at=state.seen_at)
            found = self._shape_ids.get(shape)
            if found is not None:
                return found
        found = self._shape_ids[shape] = len(self._shape_ids)
        return found

    # -- Nodes (MIG manager state) -----------------------------------------------------------------

    def replace_nodes(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        items = list(items)
        states = {NodeName(n["metadata"]["name"]): s for n in items if (s := _mig_state(n)) is not None}
        allocatable = {
            NodeName(n["metadata"]["name"]): a for n in items if (a := node_allocatable(n)) is not None
        }
        with self._lock:
            changed = set(states) ^ set(self._mig_states) | {
                n for n in states if states[n] != self._mig_states.get(n)
            }
            changed |= {
                n
                for n in allocatable.keys() | self._allocatable
                if allocatable.get(n) != self._allocatable.get(n)
            }
            for name in states.keys() | self._mig_states.keys():
                self._note_mig_transition(name, self._mig_states.get(name), states.get(name))
            self._mig_states = states
            self._allocatable = allocatable
            for name in changed:
                self._refresh(name)
            self._synced.add("nodes")
            self._snapshot = None

    def apply_node(self, event_type: str, obj: Mapping[str, Any]) -> None:
        name = NodeName(obj["metadata"]["name"])
        state = None if event_type == "DELETED" else _mig_state(obj)
        allocatable = None if event_type == "DELETED" else node_allocatable(obj)
        with self._lock:
            if allocatable is None:
                self._allocatable.pop(name, None)
            else:
                self._allocatable[name] = allocatable
            self._note_mig_transition(name, self._mig_states.get(name), state)
            if state is None:
                self._mig_states.pop(name, None)
            else:
                self._mig_states[name] = state
            self._refresh(name)
            self._snapshot = None

    def _note_mig_transition(self, name: NodeName, before: str | None, after: str | None) -> None:
        """A change of the node's MIG manager state; under the lock."""
        if after == "success" and before in MIG_UNSETTLED_STATES:
            record = self._nodes.get(name)
            self._awaiting_report[name] = record.gpunode.generation if record else None
        elif after in MIG_UNSETTLED_STATES or after is None:
            self._awaiting_report.pop(name, None)  # the state label says it all again

    # -- Assumed allocations -----------------------------------------------------------------------

    def assume(
        self, uid: str, node: NodeName, resources: Mapping[str, int], *, ttl_s: float | None = None
    ) -> None:
        """Hold ``resources`` on ``node`` for ``uid`` until the watch shows the pod bound, or for
        ``ttl_s`` (default ``assume_ttl_s``; a reservation holds for its whole duration)."""
        with self._lock:
            if uid in self._pods:
                return  # already confirmed bound: counting it twice would leak capacity
            self._hold(uid, node, resources, ttl_s)

    def _hold(self, uid: str, node: NodeName, resources: Mapping[str, int], ttl_s: float | None) -> None:
        expires = self._clock() + (self._settings.assume_ttl_s if ttl_s is None else ttl_s)
        previous = self._assumed.pop(uid, None)
        if previous is not None:
            self._add(previous.node, previous.resources, -1)
        self._assumed[uid] = AssumedAllocation(
            uid=uid, node=node, resources=dict(resources), expires_at=expires
        )
        self._add(node, resources, +1)
        self._snapshot = None

    def try_assume(
        self,
        uid: str,
        node: NodeName,
        resources: Mapping[str, int],
        refusal: Callable[[NodeShape], str | None],
        *,
        ttl_s: float | None = None,
    ) -> str | None:
        """Check the node and hold ``resources`` on it in one step; None if held, else why not.

        ``refusal(shape)`` says why a node of that shape cannot take the resources (None: it can).
        Check and hold happen under the cache's lock, so of several callers racing for the last
        slice (binds, reservations) exactly one gets it.
        """
        with self._lock:
            state = self._states.get(node)
            if state is None:
                return f"no GPU inventory for node {node}"
            age = self._clock() - state.seen_at
            if age > self._settings.stale_after_s:
                return f"inventory stale for {age:.0f} s (limit {self._settings.stale_after_s:.0f} s)"
            reason = refusal(state.shape)
            if reason is not None:
                return reason
            self._hold(uid, node, resources, ttl_s)
            return None

    def transfer(self, from_uid: str, to_uid: str, *, ttl_s: float | None = None) -> AssumedAllocation | None:
        """Hand a hold over (a reservation's to the pod that claims it) without ever releasing the room."""
        with self._lock:
            held = self._assumed.pop(from_uid, None)
            if held is None:
                return None
            expires = self._clock() + (self._settings.assume_ttl_s if ttl_s is None else ttl_s)
            moved = AssumedAllocation(
                uid=to_uid, node=held.node, resources=held.resources, expires_at=expires
            )
            self._assumed[to_uid] = moved
            self._snapshot = None
            return held

    def forget(self, uid: str) -> None:
        """Drop an assumption (a failed bind rolls back)."""
        with self._lock:
            assumption = self._assumed.pop(uid, None)
            if assumption is not None:
                self._add(assumption.node, assumption.resources, -1)
                self._snapshot = None

    def pod_allocation(self, uid: str) -> PodAllocation | AssumedAllocation | None:
        """What a pod holds, bound or assumed (preemption asks which victims free what)."""
        with self._lock:
            return self._pods.get(uid) or self._assumed.get(uid)

    def changed_since(self, version: int) -> set[str] | None:
        """Nodes whose state changed after ``version`` (``InventorySnapshot.version``); None: too long
        ago to say, treat every node as changed."""
        with self._lock:
            return self._journal.since(version)

    def assumed(self, uid: str) -> AssumedAllocation | None:
        with self._lock:
            found = self._assumed.get(uid)
            return found if found is not None and found.expires_at > self._clock() else None

    # -- Readers -----------------------------------------------------------------------------------

    def snapshot(self) -> InventorySnapshot:
        """An immutable view; reused while nothing changed for up to a second (ages are per second)."""
        now = self._clock()
        with self._lock:
            cached = self._snapshot
            if cached is not None and now - cached.taken_at < 1.0:
                return cached
            for uid in [uid for uid, a in self._assumed.items() if a.expires_at <= now]:
                expired = self._assumed.pop(uid)
                self._add(expired.node, expired.resources, -1)
            snapshot = InventorySnapshot(
                nodes=MappingProxyType(dict(self._nodes)),
                states=MappingProxyType(dict(self._states)),
                allocated_total=MappingProxyType(dict(self._allocated_total)),
                taken_at=now,
                settings=self._settings,
                synced={"gpunodes", "pods"} <= self._synced,
                shape_epoch=self._shape_epoch,
                version=self._journal.version,
            )
            self._snapshot = snapshot
            return snapshot


def _same(assumption: AssumedAllocation, allocation: PodAllocation) -> bool:
    """Whether a bound pod holds just what its assumption held: confirming it changes no count."""
    return assumption.node == allocation.node and dict(assumption.resources) == dict(allocation.resources)


def _requests_of(pod: Mapping[str, Any]) -> tuple[str, tuple[NodeName, int, int]] | None:
    """(uid, (node, CPU milli, memory MiB)) of a bound pod that holds its requests, else None."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return None
    cpu, memory = pod_requests(pod)
    return str((pod.get("metadata") or {}).get("uid", "")), (NodeName(str(node)), cpu, memory)


def _mig_state(node: Mapping[str, Any]) -> str | None:
    labels = node.get("metadata", {}).get("labels") or {}
    state = labels.get(MIG_CONFIG_STATE_LABEL)
    return str(state) if state is not None else None


class LiveOffer:
    """What the webhook offers, from the cache's fresh nodes, recomputed at most every ``refresh_s``.

    The offer is the set of (model, MIG profile) that exist somewhere; it changes when a GPU is
    repartitioned (minutes), while the cache changes with every heartbeat. Recomputing it over
    thousands of nodes for each admission would cost more than the admission itself. ``offer_of``
    says what the fresh nodes offer: what exists (the default), or, while kgm applies MIG layouts,
    also the profiles the planner may carve (``inventory.domain.mig_candidates.plannable_offer``).
    """

    def __init__(
        self,
        cache: InventoryCache,
        prices: PriceTable,
        catalogue: Catalogue,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        offer_of: Callable[[ClusterInventory], Offer] = offer_of,
    ) -> None:
        self._cache = cache
        self._prices = prices
        self._catalogue = catalogue
        self._offer_of = offer_of
        self._refresh_s = refresh_s
        self._clock = clock
        self._offer: Offer | None = None
        self._computed_at = 0.0

    def __call__(self) -> Offer:
        now = self._clock()
        if self._offer is None or now - self._computed_at >= self._refresh_s:
            snapshot = self._cache.snapshot()
            fresh = tuple(
                record.gpunode.inventory
                for name, record in snapshot.nodes.items()
                if snapshot.capacity(name).schedulable
            )
            cluster = ClusterInventory(nodes=fresh, catalogue=self._catalogue, prices=self._prices)
            self._offer, self._computed_at = self._offer_of(cluster), now
        return self._offer

    def ready(self) -> bool:
        return self._cache.snapshot().synced
