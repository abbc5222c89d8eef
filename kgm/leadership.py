"""Which replica decides: placement (``/extender/*``) and reservations, with 2+ replicas of `kgm serve`.

The holds that keep two pods off one slice (binds assumed until the watch confirms them, reservations)
live in one replica's memory, so only one replica may decide: the one holding the ``kgm-reconciler``
Lease, and only once it has held again, from the ledger, what the reservations hold
(:meth:`Reserver.restore`), for the term it is leader in. Any other replica answers the extender "not
the leader; retry" and refuses reservation writes with 503; the webhook and every read stay on every
replica. The leader's pod is labelled ``gpu.kgm.io/role=leader`` (:class:`inventory.leader.RoleLabel`)
and the Service ``kgm-leader`` selects it, so callers reach it; a caller that reaches another replica in
the seconds after a failover is refused and retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from inventory.domain.allocation import Allocation
from inventory.reservations.service import ReservationRefusedError, ReservationRequest, ReservationService

NOT_LEADER = "not the leader; retry (through the Service kgm-leader)"

logger = logging.getLogger("kgm.leadership")


class Leadership:
    """``serving()``: this replica leads, and has restored the reservations' holds for this term."""

    def __init__(
        self,
        *,
        is_leader: Callable[[], bool],
        term: Callable[[], int],
        ready: Callable[[], bool],
        restore: Callable[[], int],
        interval_s: float = 0.2,
        log: logging.Logger = logger,
    ) -> None:
        """``term``: how many times this replica became leader; ``ready``: the cache has synced (restore
        before that would hold on nodes the cache does not know yet); ``restore``: hold again what the
        ledger's open reservations hold, returning how many."""
        self._is_leader = is_leader
        self._term = term
        self._ready = ready
        self._restore = restore
        self._interval = interval_s
        self._log = log
        self._restored_term = 0

    def serving(self) -> bool:
        return self._is_leader() and self._restored_term == self._term() > 0

    def restore_once(self) -> bool:
        """If this replica leads and has not restored for this term yet (and the cache is ready): restore.
        True when it then serves."""
        term = self._term()
        if not self._is_leader() or self._restored_term == term or not self._ready():
            return self.serving()
        count = self._restore()
        self._restored_term = term  # a term that changed meanwhile differs: restored again next time
        self._log.info(
            "leading: reservations held again",
            extra={"event": "serve.reservations_restored", "count": count, "term": term},
        )
        return self.serving()

    def run(self, stop: threading.Event) -> None:
        """Restore at the start of every term, until ``stop``."""
        while not stop.is_set():
            try:
                self.restore_once()
            except Exception as error:  # the ledger's trouble: not serving yet, tried again
                self._log.error(
                    "reservations not restored", extra={"event": "serve.restore_failed", "error": str(error)}
                )
            stop.wait(self._interval)


class TermRestore:
    """What a new term holds: every open reservation in the ledger (``restore``), and nothing of one
    that another leader ended since this replica's previous term began (``forget`` by its id). Holds
    of a term are created from that term's start on, so the reservations open at some moment since
    then (``overlapping``) are all this replica may still hold; an ended one would hold its slice until
    its own lapse otherwise."""

    def __init__(
        self,
        *,
        overlapping: Callable[[datetime, datetime], Iterable[Allocation]],
        forget: Callable[[str], None],
        restore: Callable[[], int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._overlapping = overlapping
        self._forget = forget
        self._restore = restore
        self._clock = clock
        self._since: datetime | None = None

    def __call__(self) -> int:
        now = self._clock()
        if self._since is not None:
            for allocation in self._overlapping(self._since, now):
                if not allocation.is_open:
                    self._forget(allocation.id)
        self._since = now
        return self._restore()


class LeaderOnlyReservations:
    """Reservation writes while ``serving()``; 503 otherwise (the caller retries through ``kgm-leader``)."""

    def __init__(self, reservations: ReservationService, serving: Callable[[], bool]) -> None:
        self._reservations = reservations
        self._serving = serving

    def reserve(self, request: ReservationRequest) -> Allocation:
        self._check()
        return self._reservations.reserve(request)

    def release(self, allocation_id: str) -> Allocation | None:
        self._check()
        return self._reservations.release(allocation_id)

    def _check(self) -> None:
        if not self._serving():
            raise ReservationRefusedError(NOT_LEADER, status=503)
