"""GpuExtender: the four verbs over the inventory cache (implements ``ExtenderService``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import orjson

from extender import wire
from extender.bind import BindCoordinator, Binder, ReservationLookup
from extender.filter import filter_nodes
from extender.memo import FilterMemo, ScoreMemo, shape_scorer, unique
from extender.prioritize import (
    POLICIES,
    PrioritySettings,
    RequestType,
    learned_feed,
    learned_workload,
    prioritize,
    raw_score,
    scoring_inputs,
)
from extender.service import FilterOutcome, Victims, reason_kinds
from inventory.domain.bounded import BoundedDict
from inventory.domain.demand import GpuDemand, demand_of
from inventory.domain.fit import Verdict, judge_shape
from inventory.domain.labels import FULL_GPU_RESOURCE
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.shape import NodeShape
from inventory.domain.snapshot import InventorySnapshot
from inventory.live.cache import InventoryCache

#: ``fetch(namespace, name, timeout_s)``: the pod as the API server has it now, None if there is none.
PodFetcher = Callable[[str, str, float], Mapping[str, Any] | None]

#: Seconds a bind may take in all (reading the pod, writing the Binding). kube-scheduler gives the whole
#: call httpTimeout (5 s in manifests/scheduler/kgm-scheduler.yaml) and un-assumes the pod after it; the
#: second left over is for the rest of the call (the HTTP exchange, a wait for a worker thread), so the
#: scheduler hears our answer, and the hold is released, before it gives up on its own.
BIND_TIMEOUT_S = 4.0

_NO_KINDS: Mapping[str, int] = MappingProxyType({})
_NAMES_HEAD = b',"NodeNames":['


class GpuExtender:
    def __init__(
        self,
        *,
        cache: InventoryCache,
        binder: Binder,
        prices: PriceTable,
        settings: PrioritySettings | None = None,
        fetch_pod: PodFetcher | None = None,
        reservation: ReservationLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
        workload_refresh_s: float = 10.0,
        bind_timeout_s: float = BIND_TIMEOUT_S,
    ) -> None:
        """``fetch_pod(namespace, name)`` finds a pod that bind did not see in a filter call (against a
        cluster; standalone there is no one to ask). ``reservation(id)`` is a reservation's ledger row:
        bind hands a reservation's hold only to the pod it is for."""
        self._cache = cache
        self._prices = prices
        self._settings = settings or PrioritySettings()
        self._fetch_pod = fetch_pod
        self._binds = BindCoordinator(cache=cache, binder=binder, reservation=reservation)
        # Pods as their JSON: 10,000 pods as dicts are millions of objects for every full collection
        # of the garbage collector to walk (a pause on whatever call is running); bytes are none.
        self._seen: BoundedDict[str, bytes | Mapping[str, Any]] = BoundedDict(10_000)
        self._seen_guard = threading.Lock()
        self._clock = clock
        self._workload_refresh_s = workload_refresh_s
        self._bind_timeout_s = bind_timeout_s
        # (when learned, version, workload mix, feed ratios where learned): see _learned_workload.
        self._workload: tuple[float, int, Mapping[RequestType, float], object] | None = None
        # Verdicts and raw scores by shape id, per kind of pod: shapes are few, pods of a kind many.
        self._verdicts: BoundedDict[Hashable, dict[int, Verdict]] = BoundedDict(256)
        self._scores: BoundedDict[Hashable, dict[int, float]] = BoundedDict(256)
        self._memo_guard = threading.Lock()
        # Encoded answers per node for the last node list of each kind of pod (``extender.memo``): a
        # memo holds a few arrays as long as the list, so far fewer of them than of the shape memos.
        self._filter_memos: BoundedDict[Hashable, FilterMemo] = BoundedDict(16)
        self._score_memos: BoundedDict[Hashable, ScoreMemo] = BoundedDict(16)
        self._reply_guard = threading.Lock()
        # Node name -> its encoded HostPriority with a slot for the score, for every score memo: a
        # memo rebuilt after each workload refresh would encode all 5,000 again. Names come from
        # calls, so the dict is emptied past a bound rather than growing with whatever is sent.
        self._templates: dict[str, bytes] = {}

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        demand = demand_of(pod)  # first: a pod it cannot read (PodError) is neither judged nor kept
        self._remember(pod)
        return self._filter(demand, node_names)

    def filter_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        """The encoded ExtenderFilterResult and how many nodes passed: from the kind of pod's memo
        (``extender.memo``) in ``nodeCacheCapable`` mode, else through :meth:`filter`."""
        body, passed, _ = self._filter_reply(call, explain=False)
        return body, passed

    def explained_filter_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int, Mapping[str, int]]:
        """:meth:`filter_reply`, and when no node passed, how many nodes gave each kind of reason."""
        return self._filter_reply(call, explain=True)

    def _filter_reply(
        self, call: wire.ExtenderCall, *, explain: bool
    ) -> tuple[bytes, int, Mapping[str, int]]:
        demand = demand_of(call.pod)
        self._remember(call.pod)
        if call.nodes is None and demand.wants_gpus and not self._pinned(demand):
            with self._reply_guard:
                snapshot = self._cache.snapshot()
                key = (snapshot.shape_epoch, _demand_key(demand))
                memo = self._filter_memos.use(key)
                if memo is None or (memo.names is not call.node_names and memo.names != call.node_names):
                    index = unique(call.node_names)
                    verdicts = self._memo(self._verdicts, key)
                    memo = None if index is None else FilterMemo(call.node_names, index, verdicts)
                    if memo is not None:
                        self._filter_memos[key] = memo
                if memo is not None:
                    changed = None if memo.version is None else self._cache.changed_since(memo.version)
                    body, passed = memo.reply(demand, snapshot, changed)
                    return body, passed, memo.kinds() if explain and not passed else _NO_KINDS
        outcome = self._filter(demand, call.node_names)
        kinds = reason_kinds(outcome) if explain and not outcome.passed else _NO_KINDS
        return wire.filter_result(call, outcome), len(outcome.passed), kinds

    def _pinned(self, demand: GpuDemand) -> bool:
        return demand.allocation_id is not None and self._cache.assumed(demand.allocation_id) is not None

    def _filter(self, demand: GpuDemand, node_names: Sequence[str]) -> FilterOutcome:
        if demand.allocation_id is not None:
            reserved = self._cache.assumed(demand.allocation_id)
            if reserved is not None:
                return _pinned(
                    demand.allocation_id, reserved.node, dict(reserved.resources), demand, node_names
                )
        snapshot = self._cache.snapshot()
        memo = self._memo(self._verdicts, (snapshot.shape_epoch, _demand_key(demand)))
        return filter_nodes(demand, node_names, snapshot, memo)

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        demand = demand_of(pod)
        self._remember(pod)
        snapshot = self._cache.snapshot()
        settings, key = self._scoring(demand, snapshot)
        memo = self._memo(self._scores, key)
        return prioritize(demand, node_names, snapshot, self._prices, settings, memo)

    def prioritize_reply(self, call: wire.ExtenderCall) -> tuple[bytes, int]:
        """The encoded HostPriorityList and how many nodes it scores, from the kind of pod's memo
        (``extender.memo``) where the node names are unique, else through :meth:`prioritize`."""
        demand = demand_of(call.pod)
        self._remember(call.pod)
        with self._reply_guard:
            snapshot = self._cache.snapshot()
            settings, key = self._scoring(demand, snapshot)
            memo = self._score_memos.use(key)
            if memo is None:
                memo = self._score_memo(demand, snapshot, settings, key)
            changed = None if memo.version is None else self._cache.changed_since(memo.version)
            passed = self._passed_by(demand, snapshot, call.node_names)
            moves = None
            if passed is not None and memo.source is not None and memo.source[0] is passed:
                moves = passed.moves_since(memo.source[1])
            body = memo.reply(demand, snapshot, call.node_names, changed, moves)
            memo.source = None if passed is None else (passed, passed.generation)
            if body is not None:
                return body, len(call.node_names)
        scores = prioritize(
            demand, call.node_names, snapshot, self._prices, settings, self._memo(self._scores, key)
        )
        return wire.prioritize_result(scores), len(scores)

    def _passed_by(
        self, demand: GpuDemand, snapshot: InventorySnapshot, names: list[str]
    ) -> FilterMemo | None:
        """The filter memo of the pod's kind whose passed nodes ``names`` is (the very list, handed to
        the call's reader by :meth:`known_node_names`), None if it is no such list."""
        memo = self._filter_memos.get((snapshot.shape_epoch, _demand_key(demand)))
        return memo if memo is not None and memo.is_passed_list(names) else None

    def known_node_names(self, tail: bytes) -> list[str] | None:
        """The names of a call's ``,"NodeNames":[...]}`` tail where they are the nodes a filter just
        passed, byte for byte as its reply wrote them (kube-scheduler sends prioritize the nodes that
        passed filter): the list the filter memo keeps, so nothing is parsed and prioritize follows
        the list by the nodes that moved (``FilterMemo.moves_since``). None otherwise."""
        length, start = len(tail) - len(_NAMES_HEAD) - 2, len(_NAMES_HEAD)  # the members between [ and ]}
        with self._reply_guard:
            for key in reversed(list(self._filter_memos)):  # the newest first: the filter just called
                memo = self._filter_memos.get(key)
                # startswith at an offset: comparing a memoryview's slice was 100 times slower.
                if (
                    memo is not None
                    and len(memo.passed_bytes) == length
                    and tail.startswith(memo.passed_bytes, start)
                ):
                    return memo.passed_names()
        return None

    def _scoring(self, demand: GpuDemand, snapshot: InventorySnapshot) -> tuple[PrioritySettings, Hashable]:
        """The settings a pod is scored with (the learned workload filled in) and its memos' key."""
        settings = self._settings
        version, workload = self._learned_workload()
        if settings.workload is None:
            settings = replace(settings, workload=workload)
        policy = demand.policy if demand.policy in POLICIES else settings.default_policy
        # Only fragmentation reads what is learned: the other policies' memos outlive its refreshes.
        uses_workload = policy == "fragmentation" and (
            self._settings.workload is None or settings.feed is None
        )
        return settings, (
            snapshot.shape_epoch,
            _demand_key(demand),
            policy,
            version if uses_workload else None,
        )

    def _score_memo(
        self, demand: GpuDemand, snapshot: InventorySnapshot, settings: PrioritySettings, key: Hashable
    ) -> ScoreMemo:
        scores = self._memo(self._scores, key)
        policy, workload, feed = scoring_inputs(demand, snapshot, settings, scores)
        prices = self._prices

        def score(shape: NodeShape) -> float:
            return raw_score(policy, demand, shape, prices, workload)

        scorer = shape_scorer(scores, score)  # type: ignore[arg-type]
        if len(self._templates) > 4 * len(snapshot.states) + 10_000:
            self._templates.clear()
        memo = ScoreMemo(scorer, feed if demand.wants_gpus else None, settings.hot_penalty, self._templates)
        self._score_memos[key] = memo
        return memo

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        """Within ``bind_timeout_s`` in all (see :data:`BIND_TIMEOUT_S`)."""
        deadline = time.monotonic() + self._bind_timeout_s
        with self._seen_guard:
            seen = self._seen.get(uid)
        pod = orjson.loads(seen) if isinstance(seen, bytes) else seen
        if pod is None and self._fetch_pod is not None:
            try:
                pod = self._fetch_pod(namespace, name, self._bind_timeout_s)
            except Exception as error:  # the API server's trouble: kube-scheduler retries the pod
                return f"cannot read pod {namespace}/{name}: {error}"
            if pod is not None and str((pod.get("metadata") or {}).get("uid")) != uid:
                return f"pod {namespace}/{name} was replaced (UID {uid} is gone)"
        if pod is None:
            return f"pod {namespace}/{name} ({uid}) was not seen by filter; it will be scheduled again"
        return self._binds.bind(pod, node, timeout_s=deadline - time.monotonic())

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        """Keep the nodes where evicting all of kube-scheduler's victims makes room for the pod in our
        view too; drop the others whole.

        kube-scheduler chose each node's victims as the fewest that make the pod fit its in-tree
        filters (CPU, memory, ports, the device plugin's counts), and does not check our reply again:
        it evicts exactly the victims of the node it picks. So a node is kept with every victim, in
        the order given (highest priority first) and with its ``NumPDBViolations`` unchanged; never a
        subset, which could leave the pod unable to fit after the evictions."""
        demand = demand_of(pod)
        if not demand.wants_gpus:
            return dict(victims)
        if demand.allocation_id is not None:
            reserved = self._cache.assumed(demand.allocation_id)
            if reserved is not None:  # room is held on one node: evicting elsewhere frees nothing it may use
                kept = victims.get(reserved.node)
                if kept is None or not kept.pod_uids or dict(reserved.resources) != dict(demand.resources):
                    return {}
                return {reserved.node: kept}
        snapshot = self._cache.snapshot()
        oldest = snapshot.taken_at - snapshot.settings.stale_after_s
        result: dict[str, Victims] = {}
        for node, candidates in victims.items():
            state = snapshot.states.get(NodeName(node))
            # kube-scheduler refuses a node offered for preemption with no victim on it.
            if not candidates.pod_uids or state is None or state.seen_at < oldest:
                continue
            freed: dict[str, int] = {}
            for uid in candidates.pod_uids:
                held = self._cache.pod_allocation(uid)
                if held is None or held.node != node:
                    continue
                for resource, count in held.resources.items():
                    freed[resource] = freed.get(resource, 0) + count
            if judge_shape(demand, _with_freed(state.shape, freed)).fits:
                result[node] = candidates
        return result

    def _remember(self, pod: Mapping[str, Any]) -> None:
        metadata = pod.get("metadata")
        uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
        if not uid:
            return
        try:
            kept: bytes | Mapping[str, Any] = orjson.dumps(pod)
        except TypeError:  # not JSON (a caller's own object): kept as it is
            kept = pod
        with self._seen_guard:
            self._seen[str(uid)] = kept

    def _learned_workload(self) -> tuple[int, Mapping[RequestType, float]]:
        """The workload mix and the version of what is learned (the mix, and the feed ratios where
        the settings give none); learning walks every node, so it is done every few seconds, not for
        each pod. The fragmentation score memos are keyed by the version: a new one is made only when
        what was learned changed (a memo's rebuild took 9 ms at 5,000 nodes, per kind of pod)."""
        now = self._clock()
        if self._workload is None or now - self._workload[0] >= self._workload_refresh_s:
            snapshot = self._cache.snapshot()
            workload = learned_workload(snapshot)
            feed = learned_feed(snapshot) if self._settings.feed is None else None
            if self._workload is None:
                self._workload = (now, 0, workload, feed)
            elif feed == self._workload[3] and (self._settings.workload or workload == self._workload[2]):
                self._workload = (now, *self._workload[1:])
            else:
                self._workload = (now, self._workload[1] + 1, workload, feed)
        return self._workload[1], self._workload[2]

    def _memo(self, memos: BoundedDict[Hashable, dict[int, Any]], key: Hashable) -> dict[int, Any]:
        with self._memo_guard:
            memo = memos.use(key)
            if memo is None:
                memo = memos[key] = {}
            return memo


def _pinned(
    allocation_id: str, node: str, held: Mapping[str, int], demand: GpuDemand, node_names: Sequence[str]
) -> FilterOutcome:
    """A pod claiming a reservation fits its reserved node (the room is held for it) and no other."""
    outcome = FilterOutcome(passed=[])
    for name in node_names:
        if name != node:
            outcome.unresolvable[name] = f"pinned to node {node} by reservation {allocation_id}"
        elif dict(held) != dict(demand.resources):
            outcome.unresolvable[name] = (
                f"reservation {allocation_id} holds {dict(held)}, the pod asks for {dict(demand.resources)}"
            )
        else:
            outcome.passed.append(name)
    return outcome


def _with_freed(shape: NodeShape, freed: Mapping[str, int]) -> NodeShape:
    return replace(
        shape,
        full_gpus_free=shape.full_gpus_free + freed.get(FULL_GPU_RESOURCE, 0),
        mig_free=tuple((r, n + freed.get(r, 0)) for r, n in shape.mig_free),
    )


def _demand_key(demand: GpuDemand) -> Hashable:
    return (tuple(sorted(demand.resources.items())), demand.memory_gb, demand.products)
