"""One writer among replicas through a coordination.k8s.io Lease."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from inventory.kube import KubeConflictError
from inventory.leader import LeaderElector
from tests.support.kube_emulator import KubeEmulator


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class MemoryLeases:
    """Leases with the API server's optimistic concurrency: a stale resourceVersion is a conflict."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise KubeConflictError("exists", status=409)
        return self._store(key, body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self.leases[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeConflictError("the object has been modified", status=409)
        return self._store((namespace, name), body)

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[key] = stored
        return copy.deepcopy(stored)


def elector(store: Any, identity: str, clocks: Clocks) -> LeaderElector:
    return LeaderElector(
        store=store,
        namespace="kgm-system",
        name="kgm-reconciler",
        identity=identity,
        lease_duration_s=15,
        renew_s=5,
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
    )


def test_exactly_one_replica_leads_and_another_takes_over_when_it_goes_silent() -> None:
    clocks, store = Clocks(), MemoryLeases()
    a, b = elector(store, "a", clocks), elector(store, "b", clocks)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert (a.is_leader(), b.is_leader()) == (True, False)
    clocks.advance(5)
    assert a.try_acquire_or_renew()  # renewing keeps it
    clocks.advance(10)
    assert not b.try_acquire_or_renew()  # renewed 10 s ago: still a's
    clocks.advance(16)  # a went silent for 26 s
    assert not a.is_leader()  # a stops acting on its own clock before b may start
    assert b.try_acquire_or_renew()
    lease = store.get_lease("kgm-system", "kgm-reconciler")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)


class StaleReads:
    """A replica that read the lease just before another one wrote it."""

    def __init__(self, store: MemoryLeases, seen: dict[str, Any]) -> None:
        self.store, self.seen = store, seen

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.seen)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.store.create_lease(namespace, body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.store.replace_lease(namespace, name, body)


def test_two_replicas_racing_for_a_free_lease_cannot_both_win() -> None:
    clocks, store = Clocks(), MemoryLeases()
    elector(store, "old", clocks).try_acquire_or_renew()
    clocks.advance(20)  # the holder went silent: the lease is free for the taking
    seen_by_a = store.get_lease("kgm-system", "kgm-reconciler")
    assert seen_by_a is not None
    b = elector(store, "b", clocks)
    assert b.try_acquire_or_renew()  # b writes first
    a = elector(StaleReads(store, seen_by_a), "a", clocks)
    assert not a.try_acquire_or_renew()  # a's write carries the version it read: a conflict
    assert b.is_leader() and not a.is_leader()
    lease = store.get_lease("kgm-system", "kgm-reconciler")
    assert lease is not None and lease["spec"]["holderIdentity"] == "b"


def test_through_the_official_client_the_first_replica_leads(kube_emulator: KubeEmulator) -> None:
    clocks = Clocks()
    a = elector(kube_emulator.client, "a", clocks)
    b = elector(kube_emulator.new_client(), "b", clocks)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    stored = kube_emulator.stored("coordination.k8s.io/v1/leases", "kgm-reconciler", namespace="kgm-system")
    assert stored is not None and stored["spec"]["holderIdentity"] == "a"
