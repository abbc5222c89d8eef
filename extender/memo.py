"""Filter and prioritize answers kept per node, encoded, and redone only where the inventory changed.

kube-scheduler runs filter, prioritize and bind for one pod at a time, so every call follows a change
(the last bind): a cache of whole replies would miss every time. These memos keep, for one kind of pod
over one list of candidate nodes, each node's verdict or score and its encoded fragment of the reply
(``"n1",`` in ``NodeNames``, ``{"Host":"n1","Score":7},``); a call recomputes only the nodes the cache
names as changed since the memo's version (``InventoryCache.changed_since``), then joins the fragments.
At 5,000 nodes this cut the server CPU per pod of that loop to about 0.4 of the whole-list path's,
side by side on one machine (benchmarks/extender.py).

The answers are those of ``filter_nodes`` + ``wire.filter_result`` (byte for byte) and ``prioritize``
+ ``wire.prioritize_result`` (the same host -> score map; see :class:`ScoreMemo` for the order) over
the same snapshot: tests/extender/test_memo.py checks it over thousands of generated changes. What
else a node's answer depends on is handled here:

- time: a node goes stale ``stale_after_s`` after its last report, with no change to say so; a memo
  knows the earliest such moment among its fresh nodes and starts over once it has passed, and the
  stale nodes' reasons (which give their age) are redone at every call;
- the other candidates: scores are scaled between the lowest and the highest raw score, so when those
  move, every node whose scaled score moves gets a new fragment;
- the pod kind, policy, workload mix, feed ratios and shape numbering: the memo's key (the caller's).

Not thread-safe: the caller holds a lock around a memo's use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from itertools import compress
from math import inf

import orjson

from extender.prioritize import MAX_SCORE, stranded_growth
from inventory.domain.demand import GpuDemand
from inventory.domain.events import reason_kind
from inventory.domain.fit import Verdict, judge_shape
from inventory.domain.snapshot import InventorySnapshot

_PASSED, _FAILED, _UNRESOLVABLE = 0, 1, 2
_RUN = 64
#: Changes to a filter memo's passed nodes it lists (``FilterMemo.moves_since``): a score memo further
#: behind (kube-scheduler prioritizes right after filtering) starts from the names again.
_MOVES_KEPT = 64
_SCORES = tuple(str(score).encode() for score in range(MAX_SCORE + 1))


def unique(names: Sequence[str]) -> dict[str, int] | None:
    """Each name's position, or None when a name repeats (the general path dedupes those)."""
    index = {name: i for i, name in enumerate(names)}
    return index if len(index) == len(names) else None


class FilterMemo:
    """One kind of pod's ExtenderFilterResult (names only) over one list of nodes."""

    def __init__(self, names: list[str], index: dict[str, int], verdicts: dict[int, Verdict]) -> None:
        self.names = names
        self._index = index
        self._verdicts = verdicts  # by shape id, shared with the general path
        self._quoted = [orjson.dumps(name) for name in names]
        count = len(names)
        self._kind = bytearray(count)
        self._passed = [b""] * count
        self._failed = [b""] * count
        self._unresolvable = [b""] * count
        self._passed_count = 0
        # Fragments joined by runs of _RUN nodes: a call joins the runs it changed, then the runs.
        runs = -(-count // _RUN)
        self._runs = [[b""] * runs for _ in range(3)]
        self._dirty: set[int] = set(range(runs))
        self._reasons: dict[str, bytes] = {}
        # How many nodes give each reason, counted as nodes are judged, for the NoGpuRoom Event's
        # summary (``kinds``): reading 5,000 reasons back out of the reply cost 10 ms a no-room call.
        # A reason that names its node is counted by its kind (the summary drops the name). Strings
        # and a bytearray per node, not a tuple: thousands of tuples would be for the collector to walk.
        self._why: list[str | None] = [None] * count  # the node's reason, or its kind where named
        self._why_named = bytearray(count)  # 1 where _why holds a kind
        self._by_reason: dict[str, int] = {}
        self._by_kind: dict[str, int] = {}
        self._stale: set[int] = set()  # their reasons say how old they are: redone every call
        self._fresh_until = inf  # the first moment a node judged fresh turns stale
        self.version: int | None = None
        # The passed nodes as kube-scheduler sends them on to prioritize (``passed_names``), and which
        # nodes moved in or out of them at each change (``moves_since``): the score memo follows the
        # list by those moves rather than by set work on 5,000 freshly parsed names.
        self._passing = bytearray(count)  # 1 where the node passed
        self._moved: list[int] = []
        self.passed_bytes = b""  # NodeNames' members, as in the last reply
        self._passed_names: list[str] | None = None
        self.generation = 0  # counts the changes to the passed nodes
        self._moves: deque[tuple[int, list[int]]] = deque()
        self._moves_floor = 0  # the moves of generations above this one are all kept

    def reply(
        self, demand: GpuDemand, snapshot: InventorySnapshot, changed: set[str] | None
    ) -> tuple[bytes, int]:
        """The encoded reply and how many nodes passed, after redoing the ``changed`` nodes (None: all)."""
        if self.version is None or changed is None or snapshot.taken_at > self._fresh_until:
            self._fresh_until = inf
            self._stale.clear()
            redo: Sequence[int] = range(len(self.names))
        else:
            index = self._index
            redo = [index[name] for name in changed if name in index]
            redo.extend(self._stale - set(redo))
        for i in redo:
            self._judge(i, demand, snapshot)
            self._dirty.add(i // _RUN)
        if self._moved:
            self.generation += 1
            self._passed_names = None
            if isinstance(redo, range):  # everyone judged afresh: no list of moves says it
                self._moves.clear()
                self._moves_floor = self.generation
            else:
                self._moves.append((self.generation, self._moved))
                if len(self._moves) > _MOVES_KEPT:
                    self._moves_floor = self._moves.popleft()[0]
            self._moved = []
        self.version = snapshot.version
        return self._encode(), self._passed_count

    def passed_names(self) -> list[str]:
        """The nodes that passed, in the reply's order; one list per generation (nobody may change it)."""
        if self._passed_names is None:
            self._passed_names = list(compress(self.names, self._passing))
        return self._passed_names

    def is_passed_list(self, names: list[str]) -> bool:
        """Whether ``names`` is this generation's :meth:`passed_names` (the very list)."""
        return names is self._passed_names

    def moves_since(self, generation: int) -> list[tuple[str, bool]] | None:
        """The nodes that may have moved in or out of the passed nodes after ``generation``, each with
        whether it passes now; None when that is too long ago to say."""
        if generation < self._moves_floor:
            return None
        moved: set[int] = set()
        for at, indexes in reversed(self._moves):
            if at <= generation:
                break
            moved.update(indexes)
        names, passing = self.names, self._passing
        return [(names[i], bool(passing[i])) for i in moved]

    def _judge(self, i: int, demand: GpuDemand, snapshot: InventorySnapshot) -> None:
        name = self.names[i]
        state = snapshot.states.get(name)  # type: ignore[call-overload]  # no NodeName(name): hot path
        self._stale.discard(i)
        kind, reason = _PASSED, None
        if state is None:
            kind, reason = _UNRESOLVABLE, f"no GPU inventory for node {name}: is kgm-agent running there?"
        elif state.seen_at < snapshot.taken_at - snapshot.settings.stale_after_s:
            kind, reason = _UNRESOLVABLE, snapshot.stale_reason(state) or "inventory stale"
            self._stale.add(i)
        else:
            self._fresh_until = min(self._fresh_until, state.seen_at + snapshot.settings.stale_after_s)
            verdict = self._verdicts.get(state.shape_id)
            if verdict is None:
                verdict = self._verdicts[state.shape_id] = judge_shape(demand, state.shape)
            if verdict.fits:
                pass
            elif verdict.unresolvable:
                kind, reason = _UNRESOLVABLE, verdict.reason or "cannot host the pod"
            else:
                kind, reason = _FAILED, verdict.reason or "no room"
        self._passed_count += (kind == _PASSED) - (self._kind[i] == _PASSED and self.version is not None)
        self._kind[i] = kind
        if self._passing[i] != (kind == _PASSED):
            self._passing[i] = kind == _PASSED
            self._moved.append(i)
        quoted = self._quoted[i]
        self._passed[i] = quoted + b"," if kind == _PASSED else b""
        entry = b"" if reason is None else quoted + b":" + self._reason(reason) + b","
        self._failed[i] = entry if kind == _FAILED else b""
        self._unresolvable[i] = entry if kind == _UNRESOLVABLE else b""
        self._count_reason(i, name, reason)

    def _count_reason(self, i: int, name: str, reason: str | None) -> None:
        key = self._why[i]
        if key is not None:
            tally = self._by_kind if self._why_named[i] else self._by_reason
            left = tally[key] - 1
            if left:
                tally[key] = left
            else:
                del tally[key]
        if reason is None:
            self._why[i] = None
            return
        named = name in reason
        key = reason_kind(node=name, reason=reason) if named else reason
        tally = self._by_kind if named else self._by_reason
        tally[key] = tally.get(key, 0) + 1
        self._why[i] = key
        self._why_named[i] = named

    def kinds(self) -> dict[str, int]:
        """How many nodes give each kind of reason (``inventory.domain.events.reason_kind``) now."""
        kinds = dict(self._by_kind)
        for reason, count in self._by_reason.items():
            kind = reason_kind(node="", reason=reason)
            kinds[kind] = kinds.get(kind, 0) + count
        return kinds

    def _reason(self, reason: str) -> bytes:
        encoded = self._reasons.get(reason)
        if encoded is None:
            if len(self._reasons) > 4096:  # stale nodes' reasons carry their age: do not pile them up
                self._reasons.clear()
            encoded = self._reasons[reason] = orjson.dumps(reason)
        return encoded

    def _encode(self) -> bytes:
        passed, failed, unresolvable = self._runs
        for run in self._dirty:
            start, end = run * _RUN, (run + 1) * _RUN
            passed[run] = b"".join(self._passed[start:end])
            failed[run] = b"".join(self._failed[start:end])
            unresolvable[run] = b"".join(self._unresolvable[start:end])
        self._dirty.clear()
        self.passed_bytes = b"".join(passed)[:-1]
        # As orjson writes wire.ExtenderFilterResult: compact, in the TypedDict's key order.
        return b"".join(
            (
                b'{"Nodes":null,"NodeNames":[',
                self.passed_bytes,
                b'],"FailedNodes":{',
                b"".join(failed)[:-1],
                b'},"FailedAndUnresolvableNodes":{',
                b"".join(unresolvable)[:-1],
                b'},"Error":""}',
            )
        )


#: A node without inventory: scored 0, or left out where the stranded-GPU term applies.
_ABSENT = (inf, False)
#: Where a group's score goes in its members' fragments; orjson escapes NUL in names, so it is unique.
_SLOT = b"\x00"


class ScoreMemo:
    """One kind of pod's HostPriorityList, under one policy, workload mix and feed.

    Mirrors ``extender.prioritize.prioritize``: a raw score per node (its shape's, less the stranded-GPU
    growth where ``feed`` is given and some candidate has room; the caller gives no ``feed`` for a pod
    without GPUs), scaled to 0..10 between the lowest and the highest, less ``hot_penalty`` on hot
    nodes. Nodes without inventory score 0, or are left out where the stranded-GPU term applies.

    Scaling makes every score depend on the other candidates: with the packing tie-break, a bind on
    the fullest node moves the highest raw score and with it most nodes' scaled scores. So nodes are
    kept in groups of one (raw score, hot) each, a group's fragments joined by runs of _RUN nodes
    with a slot for the score; a call renders the runs whose members or score changed (a byte
    replace) and joins the runs: the work per call grows with the changed nodes and the groups, not
    with the nodes (one rejoined group of 4,000 nodes cost 0.5 ms a call, benchmarks/extender.py).
    The reply lists the nodes group by group, not in the call's order: kube-scheduler reads a
    HostPriorityList into a map by host. A call's names that differ from the last call's are taken
    as the moves the caller names where it can (the filter memo's passed nodes, which kube-scheduler
    sends on): set work on 5,000 freshly parsed names cost 1.3 ms a call (benchmarks/extender.py).
    """

    def __init__(
        self,
        shape_score: Callable[[int, object], float],
        feed: tuple[float, float] | None,
        hot_penalty: int,
        templates: dict[str, bytes],
    ) -> None:
        """``templates``: each name's fragment with a slot for the score, shared by the memos."""
        self._shape_score = shape_score  # (shape id, shape) -> raw score, memoized by the caller
        self._feed = feed
        self._hot_penalty = hot_penalty
        self.names: list[str] = []
        self._candidates: set[str] = set()
        self._templates = templates
        self._rating: dict[str, tuple[float, float, bool, bool]] = {}  # shape raw, node raw, hot, room
        self._rooms = 0
        self._per_node = False
        self._group_of: dict[str, tuple[float, bool]] = {}
        self._groups: dict[tuple[float, bool], _Group] = {}
        self.version: int | None = None
        #: The filter memo whose passed nodes were the last call's names, and their generation.
        self.source: tuple[FilterMemo, int] | None = None

    def reply(
        self,
        demand: GpuDemand,
        snapshot: InventorySnapshot,
        names: list[str],
        changed: set[str] | None,
        moves: list[tuple[str, bool]] | None = None,
    ) -> bytes | None:
        """The encoded HostPriorityList for ``names``, after redoing the ``changed`` nodes (None: all);
        None when a name repeats (the general path dedupes those). ``moves``: ``names`` is the last
        call's names with at most these nodes moved in (True) or out (False), no name repeated (a
        filter memo's passed nodes, ``FilterMemo.moves_since``)."""
        if self.version is None or changed is None:
            fresh = set(names)
            if len(fresh) != len(names):
                return None
            self._drop(set(self._candidates))
            self._add(fresh, demand, snapshot)
        else:
            redo = changed & self._candidates
            if moves is not None and names is not self.names:
                candidates = self._candidates
                joined = {name for name, passing in moves if passing and name not in candidates}
                left = {name for name, passing in moves if not passing and name in candidates}
                self._drop(left)
                redo -= left
                self._add(joined, demand, snapshot)
            elif names is not self.names and names != self.names:
                fresh = set(names)
                if len(fresh) != len(names):
                    return None
                self._drop(self._candidates - fresh)
                redo &= fresh
                self._add(fresh - self._candidates, demand, snapshot)
            self._drop(redo)
            self._add(redo, demand, snapshot)
        self.names = names
        self.version = snapshot.version
        if (self._feed is not None and self._rooms > 0) != self._per_node:
            self._per_node = not self._per_node  # the scores in use are the other kind now
            everyone = set(self._candidates)
            self._drop(everyone)
            self._add(everyone, demand, snapshot)
        return self._render()

    def _add(self, names: set[str], demand: GpuDemand, snapshot: InventorySnapshot) -> None:
        # All 5,000 nodes after each workload refresh (a new memo): kept to plain local operations.
        states, feed, per_node, score = snapshot.states, self._feed, self._per_node, self._shape_score
        rating, group_of, template = self._rating, self._group_of, self._template
        joining: dict[tuple[float, bool], list[tuple[str, bytes]]] = {}
        for name in names:
            state = states.get(name)  # type: ignore[call-overload]  # no NodeName(name): hot path
            if state is None:
                group = _ABSENT
            else:
                shape = state.shape
                raw = score(state.shape_id, shape)
                node_raw = raw - stranded_growth(demand, shape, feed) if feed is not None else raw
                room = shape.room is not None
                rating[name] = (raw, node_raw, shape.hot, room)
                self._rooms += room
                group = (node_raw if per_node else raw, shape.hot)
            group_of[name] = group
            fragments = joining.get(group)
            if fragments is None:
                fragments = joining[group] = []
            fragments.append((name, template(name)))
        for group, fragments in joining.items():
            members = self._groups.get(group)
            if members is None:
                members = self._groups[group] = _Group()
            members.extend(fragments)
        self._candidates |= names

    def _drop(self, names: set[str]) -> None:
        for name in names:
            self._candidates.discard(name)
            rating = self._rating.pop(name, None)
            if rating is not None:
                self._rooms -= rating[3]
            group = self._group_of.pop(name)
            if self._groups[group].drop(name):
                del self._groups[group]

    def _template(self, name: str) -> bytes:
        fragment = self._templates.get(name)
        if fragment is None:
            fragment = self._templates[name] = template(name)
        return fragment

    def _render(self) -> bytes:
        values = [value for value, _ in self._groups if value != _ABSENT[0]]
        low, high = min(values, default=0.0), max(values, default=0.0)
        parts: list[bytes] = []
        for group, members in self._groups.items():
            value, hot = group
            if group == _ABSENT:
                if self._per_node:
                    continue
                score = 0
            else:
                score = MAX_SCORE if high - low < 1e-9 else round(MAX_SCORE * (value - low) / (high - low))
                if hot:
                    score = max(0, score - self._hot_penalty)
                score = min(max(score, 0), MAX_SCORE)
            members.render(score, parts)
        return b"[" + b"".join(parts)[:-1] + b"]"


def template(name: str) -> bytes:
    """A node's HostPriority with a slot for its score, and the comma after it."""
    return b'{"Host":' + orjson.dumps(name) + b',"Score":' + _SLOT + b"},"


class _Group:
    """The nodes of one (raw score, hot), their fragments in runs of _RUN, joined and rendered per run."""

    __slots__ = ("joined", "members", "rendered", "runs")

    def __init__(self) -> None:
        self.members: dict[str, int] = {}  # name -> its run
        self.runs: list[dict[str, bytes]] = []
        self.joined: list[bytes | None] = []  # a run's fragments, with slots
        self.rendered: list[tuple[int, bytes] | None] = []

    def extend(self, fragments: list[tuple[str, bytes]]) -> None:
        """Add nodes (name, fragment) to the last runs, a run at a time."""
        if len(self.runs) > 2 + 2 * len(self.members) // _RUN:  # runs emptied by drops: pack
            self._pack()
        at = 0
        while at < len(fragments):
            if not self.runs or len(self.runs[-1]) >= _RUN:
                self.runs.append({})
                self.joined.append(None)
                self.rendered.append(None)
            run = len(self.runs) - 1
            piece = fragments[at : at + _RUN - len(self.runs[run])]
            self.runs[run].update(piece)
            self.members.update(dict.fromkeys([name for name, _ in piece], run))
            self.joined[run] = self.rendered[run] = None
            at += len(piece)

    def drop(self, name: str) -> bool:
        """Whether the group is empty now."""
        run = self.members.pop(name)
        del self.runs[run][name]
        self.joined[run] = self.rendered[run] = None
        return not self.members

    def _pack(self) -> None:
        fragments = [item for run in self.runs for item in run.items()]
        self.runs = [dict(fragments[at : at + _RUN]) for at in range(0, len(fragments), _RUN)]
        self.members = {name: at // _RUN for at, (name, _) in enumerate(fragments)}
        self.joined = [None] * len(self.runs)
        self.rendered = [None] * len(self.runs)

    def render(self, score: int, parts: list[bytes]) -> None:
        for run, fragments in enumerate(self.runs):
            if not fragments:
                continue
            rendered = self.rendered[run]
            if rendered is None or rendered[0] != score:
                joined = self.joined[run]
                if joined is None:
                    joined = self.joined[run] = b"".join(fragments.values())
                rendered = self.rendered[run] = (score, joined.replace(_SLOT, _SCORES[score]))
            parts.append(rendered[1])


def shape_scorer(memo: dict[int, float], score: Callable[[object], float]) -> Callable[[int, object], float]:
    """A shape's raw score through the caller's memo by shape id."""

    def scored(shape_id: int, shape: object) -> float:
        value = memo.get(shape_id)
        if value is None:
            value = memo[shape_id] = score(shape)
        return value

    return scored
