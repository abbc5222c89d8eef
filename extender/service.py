"""The extender's four verbs over plain data: what the HTTP app calls (parse, call, serialize).

Inputs are decoded pods (dicts in Kubernetes' wire format) and node names; outputs are plain
dataclasses. The HTTP layer (``extender/app.py``) maps them from and to the
``k8s.io/kube-scheduler/extender/v1`` wire types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from inventory.domain.events import reason_kind

if TYPE_CHECKING:
    from extender.wire import ExtenderCall


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    """Nodes that can take the pod now, and why each other node cannot."""

    passed: list[str]
    #: Node -> reason; preemption may help on these.
    failed: dict[str, str] = field(default_factory=dict)
    #: Node -> reason; no eviction would ever make room (wrong model, too few GPUs in all...).
    unresolvable: dict[str, str] = field(default_factory=dict)


def reason_kinds(outcome: FilterOutcome) -> dict[str, int]:
    """How many of the nodes the outcome turned down gave each kind of reason (``reason_kind``)."""
    kinds: dict[str, int] = {}
    for node, reason in {**outcome.failed, **outcome.unresolvable}.items():
        kind = reason_kind(node, reason)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@dataclass(frozen=True, slots=True)
class Victims:
    """Pods (by UID) to evict on one node, and how many PodDisruptionBudgets that breaks."""

    pod_uids: list[str]
    num_pdb_violations: int


class ExtenderService(Protocol):
    """The contract; ``extender.gpu_extender.GpuExtender`` implements it."""

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome: ...

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> dict[str, int]:
        """Score 0..10 (kube-scheduler's MaxExtenderPriority) per node, in ``node_names`` order.

        A plain dict, not an object per node: at 5,000 nodes the objects alone cost more than the
        scoring (benchmarks/extender.py).
        """
        ...

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        """Bind the pod; None on success, else the error for the reply's ``Error``."""
        ...

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        """The victims worth evicting per node (only nodes where evicting them makes room)."""
        ...


@runtime_checkable
class EncodedReplies(Protocol):
    """A service that writes filter and prioritize replies itself, from answers kept per node and
    encoded (``extender.memo``): at 5,000 nodes, judging and encoding every node for every call was
    most of the extender's time (benchmarks/extender.py). ``GpuExtender`` does; the HTTP layer uses
    it where the service does, else :class:`ExtenderService` and ``extender.wire``."""

    def filter_reply(self, call: ExtenderCall) -> tuple[bytes, int]:
        """The encoded ExtenderFilterResult, and how many nodes passed."""
        ...

    def prioritize_reply(self, call: ExtenderCall) -> tuple[bytes, int]:
        """The encoded HostPriorityList, and how many nodes it scores."""
        ...


@runtime_checkable
class KnownNodeLists(Protocol):
    """A service that knows the node names of some calls' ``,"NodeNames":[...]}`` tails without their
    being parsed: the nodes its filter passed, which kube-scheduler sends on to prioritize."""

    def known_node_names(self, tail: bytes) -> list[str] | None: ...


@runtime_checkable
class ExplainedFilterReplies(EncodedReplies, Protocol):
    """An :class:`EncodedReplies` that also says why no node passed, for the ``NoGpuRoom`` Event
    (``extender.events``) without reading the reasons back out of the encoded reply."""

    def explained_filter_reply(self, call: ExtenderCall) -> tuple[bytes, int, Mapping[str, int]]:
        """``filter_reply``, and when no node passed, how many nodes gave each kind of reason
        (``inventory.domain.events.reason_kind``); empty when some node passed."""
        ...
