"""Bind: check the node still has room, hold it, then write the Binding.

The check and the hold happen in one step under the cache's lock (``InventoryCache.try_assume``), so
concurrent binds onto a node's last slice, and reservations racing them, serialize and exactly one
wins; the Binding itself is written outside the lock (the hold already reserves the room). A failed
write rolls the hold back. A retried bind for a pod already bound to the same node succeeds without
a second write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from inventory.domain.allocation import Allocation, Status
from inventory.domain.bounded import BoundedDict
from inventory.domain.demand import demand_of
from inventory.domain.fit import refusal
from inventory.domain.model import NodeName
from inventory.live.cache import InventoryCache


class BindError(Exception):
    """The Binding could not be written; the message goes to kube-scheduler's pod event."""


class Binder(Protocol):
    def bind(self, pod: Mapping[str, Any], node: str, *, timeout_s: float) -> None:
        """Bind ``pod`` to ``node`` within ``timeout_s`` seconds, or raise :class:`BindError`."""
        ...


class InMemoryBinder:
    """Standalone mode (no Kubernetes): a bind is final at once, and the cache counts the pod as
    bound (there is no watch to confirm it)."""

    def __init__(
        self, cache: InventoryCache, on_bound: Callable[[Mapping[str, Any]], None] = lambda pod: None
    ) -> None:
        """``on_bound(pod)`` gets the pod as bound (the reconciler records it: there is no watch)."""
        self._cache = cache
        self._on_bound = on_bound
        self.bound: dict[str, str] = {}

    def bind(self, pod: Mapping[str, Any], node: str, *, timeout_s: float = 0.0) -> None:
        del timeout_s  # nothing to wait for
        bound = {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}}
        self._cache.apply_pod("ADDED", bound)
        self.bound[str(pod["metadata"]["uid"])] = node
        self._on_bound(bound)


#: The ledger row of a reservation by its id (``Ledger.get``), None when there is none.
ReservationLookup = Callable[[str], Allocation | None]


class BindCoordinator:
    def __init__(
        self,
        *,
        cache: InventoryCache,
        binder: Binder,
        reservation: ReservationLookup | None = None,
        remembered: int = 10_000,
    ) -> None:
        """``reservation`` finds who a reservation is for; without it no pod takes over a reservation's
        hold (the pod then needs free room like any other)."""
        self._cache = cache
        self._binder = binder
        self._reservation = reservation
        # First in, first out: a bind is remembered once (a retry finds it and writes nothing).
        self._done: BoundedDict[str, str] = BoundedDict(remembered, renew_on_write=False)
        self._done_guard = threading.Lock()

    def bind(self, pod: Mapping[str, Any], node: str, *, timeout_s: float) -> str | None:
        """None when the pod is bound to ``node``; else why not (for the reply's ``Error``). The
        Binding is given ``timeout_s`` seconds; one that fails or times out releases the hold."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        previous = self._previous(uid)
        if previous is not None:
            return None if previous == node else f"pod already bound to {previous}"
        demand = demand_of(pod)
        claimed = None
        if demand.allocation_id is not None:
            reserved = self._cache.assumed(demand.allocation_id)
            if (
                reserved is not None
                and reserved.node == node
                and dict(reserved.resources) == dict(demand.resources)
                and self._reserved_for(demand.allocation_id, pod)
            ):
                # The reservation's hold becomes the pod's: the room is never free in between.
                claimed = self._cache.transfer(demand.allocation_id, uid)
        assumed = self._cache.assumed(uid)
        if assumed is not None and assumed.node != node:
            return f"pod is being bound to {assumed.node}"
        if assumed is None:
            refused = self._cache.try_assume(
                uid, NodeName(node), demand.resources, lambda shape: refusal(demand, shape)
            )
            if refused is not None:
                return f"node {node} no longer fits the pod: {refused}"
        try:
            self._binder.bind(pod, node, timeout_s=timeout_s)
        except BindError as error:
            if claimed is not None:  # back to the reservation, which holds until it lapses
                self._cache.transfer(uid, claimed.uid)
            else:
                self._cache.forget(uid)
            return str(error)
        self._remember(uid, node)
        return None

    def _reserved_for(self, allocation_id: str, pod: Mapping[str, Any]) -> bool:
        """Whether the reservation is this pod's to take: still reserved, of the pod's namespace, and
        of its name where the reservation names a pod (the rule of the ledger's claim). Anyone can
        write the annotation; a pod of another namespace must not take the room reserved for ``ml``."""
        row = self._reservation(allocation_id) if self._reservation is not None else None
        metadata = pod.get("metadata") or {}
        return (
            row is not None
            and row.status is Status.RESERVED
            and row.namespace == metadata.get("namespace")
            and row.pod in ("", metadata.get("name"))
        )

    def _previous(self, uid: str) -> str | None:
        with self._done_guard:
            return self._done.get(uid)

    def _remember(self, uid: str, node: str) -> None:
        with self._done_guard:
            self._done[uid] = node
