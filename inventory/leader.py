"""One writer among replicas: a ``coordination.k8s.io/v1`` Lease, as kube-controller-manager does it.

The holder renews the lease every ``renew_s``; another replica takes it over once it has not been
renewed for ``lease_duration_s``. A replica that cannot renew in time stops acting as leader before
anyone else may start (it trusts its own clock for that, never the lease's times), so two writers
never overlap as long as clocks run at the same speed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from inventory.domain.times import format_time, parse_time


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
        self._valid_until = asked_at + self._duration
        return True

    def run(self, stop: threading.Event, on_leading: Callable[[], None] = lambda: None) -> None:
        """Until ``stop``: keep trying; ``on_leading`` runs each time this replica becomes leader."""
        while not stop.is_set():
            was = self.is_leader()
            if self.try_acquire_or_renew() and not was:
                on_leading()
            stop.wait(self._renew_s)

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
