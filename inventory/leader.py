"""One writer among replicas: a ``coordination.k8s.io/v1`` Lease, as kube-controller-manager does it.

The holder renews the lease every ``renew_s``; another replica takes it over once it has not been
renewed for ``lease_duration_s``. A replica that cannot renew in time stops acting as leader before
anyone else may start (it trusts its own clock for that, never the lease's times), so two writers
never overlap as long as clocks run at the same speed.

:class:`RoleLabel` keeps the holder's own pod labelled ``gpu.kgm.io/role=leader`` (and no other pod), so
that a Service selecting that label (``kgm-leader``) reaches the one replica that decides placement and
reservations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from inventory.domain.labels import ROLE
from inventory.domain.times import format_time, parse_time

#: The value of the label ``gpu.kgm.io/role`` on the leader's pod.
ROLE_LEADER = "leader"


class LeaseStore(Protocol):
    """``inventory.kube.KubeClient`` implements it; tests may use an in-memory one."""

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


class LeaderElector:
    def __init__(
        self,
        *,
        store: LeaseStore,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15.0,
        renew_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = lease_duration_s
        self._renew_s = renew_s
        self._clock = clock
        self._wall = wall_clock
        self._log = logger or logging.getLogger("kgm.leader")
        self._valid_until = float("-inf")
        #: How many times this replica became leader: holds restored for one term are not those of the next.
        self.term = 0

    def is_leader(self) -> bool:
        # Stop a little before the lease could lapse for others: their clocks are not ours.
        return self._clock() < self._valid_until - self._renew_s / 2

    def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the lease if we may. Errors count as 'not leader this round'."""
        asked_at = self._clock()
        now = self._wall()
        try:
            lease = self._store.get_lease(self._namespace, self._name)
            if lease is None:
                self._store.create_lease(self._namespace, self._lease_body(now, transitions=0))
            else:
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity")
                if holder != self.identity and not self._expired(spec, now):
                    return self._lost()
                transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
                body = self._lease_body(
                    now,
                    transitions=transitions,
                    acquired=spec.get("acquireTime"),
                    mine=holder == self.identity,
                )
                body["metadata"]["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
                self._store.replace_lease(self._namespace, self._name, body)
        except Exception as error:  # the API server's trouble or a lost race: not leader this round
            self._log.warning(
                "lease not renewed", extra={"event": "leader.renew_failed", "error": str(error)}
            )
            return self.is_leader()
        if not self.is_leader():
            self._log.info("became leader", extra={"event": "leader.acquired", "identity": self.identity})
            self.term += 1
        self._valid_until = asked_at + self._duration
        return True

    def run(
        self,
        stop: threading.Event,
        on_leading: Callable[[], None] = lambda: None,
        on_round: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        """Until ``stop``: keep trying; ``on_leading`` runs each time this replica becomes leader,
        ``on_round(leading)`` after every round. At ``stop`` it steps down: it stops leading, hands the
        lease back (another replica may take it at once, not a lease duration later) and runs
        ``on_round(False)``."""
        while not stop.is_set():
            was = self.is_leader()
            if self.try_acquire_or_renew() and not was:
                on_leading()
            on_round(self.is_leader())
            stop.wait(self._renew_s)
        self.step_down()
        on_round(False)

    def step_down(self) -> None:
        """Stop leading and, if the lease is still ours, mark it expired one second from now."""
        if not self.is_leader():
            return
        self._valid_until = float("-inf")
        try:
            lease = self._store.get_lease(self._namespace, self._name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            body = self._lease_body(
                self._wall(),
                transitions=int(spec.get("leaseTransitions") or 0),
                acquired=spec.get("acquireTime"),
                mine=True,
            )
            body["spec"]["leaseDurationSeconds"] = 1
            body["metadata"]["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
            self._store.replace_lease(self._namespace, self._name, body)
        except Exception as error:  # the lease then lapses on its own
            self._log.warning(
                "lease not handed back", extra={"event": "leader.release_failed", "error": str(error)}
            )
            return
        self._log.info("stepped down", extra={"event": "leader.released", "identity": self.identity})

    def _lost(self) -> bool:
        if self.is_leader():
            self._log.warning("lost the lease", extra={"event": "leader.lost", "identity": self.identity})
        self._valid_until = float("-inf")
        return False

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        renewed = parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self._duration
        return renewed is None or renewed + timedelta(seconds=float(duration)) < now

    def _lease_body(
        self, now: datetime, *, transitions: int, acquired: object = None, mine: bool = False
    ) -> dict[str, Any]:
        stamp = format_time(now, micro=True)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._duration),
                "acquireTime": acquired if mine and acquired else stamp,
                "renewTime": stamp,
                "leaseTransitions": transitions,
            },
        }


class PodLabels(Protocol):
    """``inventory.kube.KubeClient`` implements it."""

    def patch_pod_labels(
        self, namespace: str, name: str, labels: Mapping[str, str | None]
    ) -> dict[str, Any]: ...


class RoleLabel:
    """This replica's pod carries ``gpu.kgm.io/role=leader`` exactly while it leads.

    ``sync(leading)`` runs after each round of the election; it patches only when the wanted label
    differs from the last one written, and retries a failed patch at the next round. The first round
    removes a label a previous process in the same pod may have left (a container restart keeps the
    pod's labels). The label only routes callers: what may decide is the lease itself, checked on
    every call, so a label that lags a lost lease makes the old leader refuse, never double-book.
    """

    def __init__(
        self, *, store: PodLabels, namespace: str, pod: str, logger: logging.Logger | None = None
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._pod = pod
        self._log = logger or logging.getLogger("kgm.leader")
        self._written: bool | None = None

    def sync(self, leading: bool) -> None:
        if self._written is leading:
            return
        try:
            self._store.patch_pod_labels(self._namespace, self._pod, {ROLE: ROLE_LEADER if leading else None})
        except Exception as error:  # retried at the next round
            self._log.warning(
                "pod role label not written",
                extra={"event": "leader.label_failed", "pod": self._pod, "error": str(error)},
            )
            return
        self._written = leading
        self._log.info(
            "pod role label written", extra={"event": "leader.labelled", "pod": self._pod, "leader": leading}
        )
