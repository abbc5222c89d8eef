"""GpuAllocation objects: reservations made through Kubernetes (``manifests/crds/gpuallocation.yaml``).

A user creates a namespaced ``GpuAllocation``; the leader among the controller's replicas reserves a MIG
instance or a whole GPU for it through the :class:`~inventory.reservations.service.ReservationService`
(the same one ``POST /api/v1/gpu/allocations`` uses) and writes the outcome to the object's status
subresource, in one write per decision: ``Allocated`` with the resource, node, allocation id, hourly
price and time, or ``Failed`` with the reason. Deleting the object releases a reservation that no pod
has claimed yet.

The status is the record of what was done: an object whose status carries an ``allocationId`` is never
reserved for again, so relists, replays and restarts cannot reserve twice. The controller also keeps, per
object, the decision it made or saw (keyed by namespace, name and uid) so that a replayed event that
predates its own status write does not reserve twice either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from inventory.domain.allocation import Allocation
from inventory.domain.times import format_time
from inventory.kube import KubeClient, KubeError, KubeNotFoundError, WatchEvent
from inventory.live.reflector import Reflector
from inventory.reservations.request import SPEC, parse_request
from inventory.reservations.service import ReservationRefusedError, ReservationRequest, ReservationService


class Phase(StrEnum):
    PENDING = "Pending"
    ALLOCATED = "Allocated"
    FAILED = "Failed"
    RELEASED = "Released"


# -- Parsing (pure) -----------------------------------------------------------------------------------


def request_of(obj: Mapping[str, Any]) -> ReservationRequest:
    """The reservation a GpuAllocation object asks for; :class:`ValueError` naming the first bad field.

    Checks again what the CRD's schema checks (and applies its defaults): an API server may serve the
    resource without the schema, and an object written before a schema change keeps its old values.
    """
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("metadata.namespace is missing: a GpuAllocation is namespaced")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name is missing")
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec must be an object, not {type(spec).__name__}")
    return parse_request(spec, SPEC, namespace=namespace, pod_name=name)


def allocated_status(allocation: Allocation, at: datetime) -> dict[str, Any]:
    """The status written for a reservation that was made."""
    return {
        "phase": Phase.ALLOCATED.value,
        "allocatedResource": allocation.resource,
        "nodeName": allocation.node or "",
        "allocationId": allocation.id,
        "costPerHour": float(allocation.hourly_price),
        "allocationTime": format_time(at.astimezone(UTC)),
        "message": "",
    }


# -- The controller -----------------------------------------------------------------------------------

Key = tuple[str, str]  # (namespace, name)


class GpuAllocationStore(Protocol):
    """Where statuses are written; ``inventory.kube.KubeClient`` implements it (a merge patch)."""

    def update_gpuallocation_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status`` into the object's status; :class:`KubeNotFoundError` when it is gone."""
        ...


@dataclass(frozen=True, slots=True)
class _Decision:
    """What was decided for one object (by us, or by a leader before us, as its status says)."""

    uid: str
    allocation_id: str | None  # None: Failed (or an end state): nothing held


def _key_of(obj: Mapping[str, Any]) -> tuple[Key, str] | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        return None
    return (namespace, name), uid if isinstance(uid, str) else ""


def _status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, Mapping) else {}


def _allocation_id_of(obj: Mapping[str, Any]) -> str | None:
    found = _status_of(obj).get("allocationId")
    return found if isinstance(found, str) and found else None


class GpuAllocationController:
    """Turns GpuAllocation objects into reservations; fed by a :class:`Reflector` (``replace``,
    ``on_event``) and by :meth:`resync`. Thread-safe (one lock: decisions are made one at a time).
    Reserves, writes and releases only while ``is_leader()``; a follower only follows what it sees."""

    def __init__(
        self,
        *,
        reservations: ReservationService,
        store: GpuAllocationStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        is_leader: Callable[[], bool] = lambda: True,
        logger: logging.Logger | None = None,
    ) -> None:
        """``clock``: the ``allocationTime`` written with a reservation."""
        self._reservations = reservations
        self._store = store
        self._clock = clock
        self._is_leader = is_leader
        self._log = logger or logging.getLogger("kgm.gpuallocation")
        self._lock = threading.Lock()
        self._objects: dict[Key, Mapping[str, Any]] = {}  # the latest version seen of every object
        self._decisions: dict[Key, _Decision] = {}

    # Reflector callbacks

    def replace(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        """A complete list: every object is handled as if it had just come, and reservations this
        controller knows of whose object is gone (deleted while the watch was down) are released."""
        with self._lock:
            objects: dict[Key, Mapping[str, Any]] = {}
            uids: dict[Key, str] = {}
            for obj in items:
                found = _key_of(obj)
                if found is not None:
                    objects[found[0]], uids[found[0]] = obj, found[1]
            self._objects = objects
            for key, decision in list(self._decisions.items()):
                if uids.get(key) != decision.uid:
                    del self._decisions[key]
                    if decision.allocation_id is not None:
                        self._release(key, decision.allocation_id)
            for obj in objects.values():
                self._handle(obj)

    def on_event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event: ``ADDED``/``MODIFIED`` may need a reservation, ``DELETED`` releases."""
        found = _key_of(obj)
        if found is None:
            return
        key, _ = found
        with self._lock:
            if event_type != "DELETED":
                self._objects[key] = obj
                self._handle(obj)
                return
            self._objects.pop(key, None)
            decision = self._decisions.pop(key, None)
            held = {_allocation_id_of(obj), decision.allocation_id if decision else None} - {None}
            for allocation_id in sorted(a for a in held if a is not None):
                self._release(key, allocation_id)

    def resync(self) -> None:
        """Decide again for every object still waiting for a decision: one whose status write failed,
        or one that came while this replica was a follower and the old leader went away."""
        with self._lock:
            for obj in list(self._objects.values()):
                self._handle(obj)

    # Decisions

    def _handle(self, obj: Mapping[str, Any]) -> None:
        found = _key_of(obj)
        if found is None:
            return
        key, uid = found
        decided = self._decisions.get(key)
        if decided is not None and decided.uid == uid:
            return  # decided already (our own write may not have come back through the watch yet)
        status = _status_of(obj)
        allocation_id, phase = _allocation_id_of(obj), status.get("phase")
        if allocation_id is not None or phase not in (None, "", Phase.PENDING.value):
            # Decided before (by us before a restart, or by another leader): learn it, never redo it.
            self._decisions[key] = _Decision(uid, allocation_id)
            return
        if not self._is_leader():
            return
        try:
            self._decide(key, uid, obj)
        except Exception:
            # The object stays undecided: the next event, relist or resync tries again.
            self._log.exception(
                "gpuallocation decision failed",
                extra={"event": "gpuallocation.error", "namespace": key[0], "gpuallocation": key[1]},
            )

    def _decide(self, key: Key, uid: str, obj: Mapping[str, Any]) -> None:
        try:
            request = request_of(obj)
        except ValueError as error:
            self._fail(key, uid, f"invalid spec: {error}")
            return
        try:
            allocation = self._reservations.reserve(request)
        except ReservationRefusedError as error:
            if error.status >= 500:  # the ledger is away: not the request's fault, try again later
                self._log.warning(
                    "reservation postponed",
                    extra={**self._ids(key), "event": "gpuallocation.postponed", "error": str(error)},
                )
                return
            self._fail(key, uid, str(error))
            return
        if not self._write(key, uid, allocated_status(allocation, self._clock()), allocation.id):
            # Nobody would ever see (or release) a reservation whose status was not written.
            self._release(key, allocation.id, quiet=True)
            return
        self._log.info(
            "gpuallocation allocated",
            extra={
                **self._ids(key, allocation.id),
                "event": "gpuallocation.allocated",
                "resource": allocation.resource,
                "node": allocation.node,
            },
        )

    def _fail(self, key: Key, uid: str, message: str) -> None:
        if self._write(key, uid, {"phase": Phase.FAILED.value, "message": message}, None):
            self._log.info(
                "gpuallocation failed",
                extra={**self._ids(key), "event": "gpuallocation.failed", "reason": message},
            )

    def _write(self, key: Key, uid: str, status: dict[str, Any], allocation_id: str | None) -> bool:
        """Write a decision; whether it was written (if not, the object stays undecided)."""
        try:
            self._store.update_gpuallocation_status(key[0], key[1], status)
        except KubeNotFoundError:
            self._log.info(
                "gpuallocation deleted before its status was written",
                extra={**self._ids(key, allocation_id), "event": "gpuallocation.gone"},
            )
            return False
        except KubeError as error:
            self._log.warning(
                "gpuallocation status write failed; trying again later",
                extra={**self._ids(key, allocation_id), "event": "gpuallocation.error", "error": str(error)},
            )
            return False
        self._decisions[key] = _Decision(uid, allocation_id)
        return True

    def _release(self, key: Key, allocation_id: str, *, quiet: bool = False) -> None:
        if not self._is_leader():
            return  # the leader releases it
        ids = self._ids(key, allocation_id)
        try:
            released = self._reservations.release(allocation_id)
        except ReservationRefusedError as error:
            # Its pod claimed it: the reservation is now the pod's allocation and ends with the pod.
            self._log.info(
                "gpuallocation deleted; its pod keeps the GPU",
                extra={**ids, "event": "gpuallocation.claimed", "reason": str(error)},
            )
            return
        except Exception:
            self._log.exception("release failed", extra={**ids, "event": "gpuallocation.error"})
            return
        if released is not None and not quiet:
            self._log.info("gpuallocation released", extra={**ids, "event": "gpuallocation.released"})

    @staticmethod
    def _ids(key: Key, allocation_id: str | None = None) -> dict[str, Any]:
        # "name" would clash with LogRecord.name (logging refuses it in ``extra``).
        return {"namespace": key[0], "gpuallocation": key[1], "allocation": allocation_id}


# -- Wiring -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuAllocationWatch:
    """The two loops that feed a controller; whoever owns the app's lifetime runs each on a thread of
    its own until their ``stop`` is set (none is started here)."""

    reflector: Reflector
    """Lists and watches GpuAllocations into the controller; notices ``stop`` at the end of its current
    watch, at most ``watch_timeout_seconds`` later."""

    resync: Callable[[threading.Event], None]
    """Calls :meth:`GpuAllocationController.resync` every ``resync_interval_s`` once the reflector has
    synced; ends at once on ``stop``."""


def gpuallocation_watch(
    kube: KubeClient,
    controller: GpuAllocationController,
    *,
    watch_timeout_seconds: int = 300,
    resync_interval_s: float = 30.0,
) -> GpuAllocationWatch:
    """The loops that keep ``controller`` in step with the cluster's GpuAllocations."""

    def on_event(event: WatchEvent) -> None:
        controller.on_event(event.type, event.object)

    reflector = Reflector(
        name="gpuallocations",
        list_fn=kube.list_gpuallocations,
        watch_fn=kube.watch_gpuallocations,
        on_replace=controller.replace,
        on_event=on_event,
        watch_timeout_seconds=watch_timeout_seconds,
        logger=logging.getLogger("kgm.reflector.gpuallocations"),
    )

    def resync(stop: threading.Event) -> None:
        while not stop.wait(resync_interval_s):
            if reflector.has_synced.is_set():
                try:
                    controller.resync()
                except Exception:  # never end the loop: the next round tries again
                    logging.getLogger("kgm.gpuallocation").exception(
                        "resync failed", extra={"event": "gpuallocation.error"}
                    )

    return GpuAllocationWatch(reflector=reflector, resync=resync)
