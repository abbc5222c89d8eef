"""A release racing a claim (``DELETE /api/v1/gpu/allocations/{id}`` while the pod that claims the
reservation is bound): exactly one wins, and a claimed allocation is never ended by the release. On
SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.ledger.sql import SqlLedger
from inventory.reservations.service import ReservationRefusedError, ReservationRequest
from tests.inventory.reservations.test_reserver import NOW, request, reserver_for
from tests.support import postgres

ROUNDS = 150
SECONDS = 20.0


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlLedger]:
    if request.param == "sqlite":
        with SqlLedger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
            yield opened
        return
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url, SqlLedger.open(url) as opened:
        yield opened


class ClaimedAfterRead:
    """The ledger, but the pod claims the reservation right after the release has read it."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def get(self, allocation_id: str) -> Allocation | None:
        found = self._ledger.get(allocation_id)
        if found is not None and found.status is Status.RESERVED:
            assert self._ledger.claim(
                allocation_id,
                namespace="ml",
                pod="train",
                pod_uid="uid-train",
                resource=found.resource,
                start=NOW,
            )
        return found


def test_a_claim_between_the_read_and_the_end_keeps_its_allocation(ledger: SqlLedger) -> None:
    reserver, cache = reserver_for(ledger)
    made = reserver.reserve(request())
    racing, _ = reserver_for(ClaimedAfterRead(ledger), cache)  # type: ignore[arg-type]
    with pytest.raises(ReservationRefusedError) as refused:
        racing.release(made.id)
    assert refused.value.status == 409
    row = ledger.get(made.id)
    assert row is not None
    assert (row.status, row.end, row.pod_uid) == (Status.ACTIVE, None, "uid-train")


def test_a_release_racing_a_claim_never_ends_a_claimed_allocation(ledger: SqlLedger) -> None:
    reserver, cache = reserver_for(ledger)
    deadline = time.monotonic() + SECONDS
    outcomes = {"claimed": 0, "released": 0}
    for round_ in range(ROUNDS):
        if time.monotonic() > deadline:
            break
        made = reserver.reserve(ReservationRequest(namespace="ml", pod_name=f"train-{round_}"))
        start = threading.Barrier(2)
        claimed: list[bool] = []
        released: list[object] = []

        def claim(
            made: Allocation = made, start: threading.Barrier = start, claimed: list[bool] = claimed
        ) -> None:
            start.wait(5)
            claimed.append(
                ledger.claim(
                    made.id,
                    namespace="ml",
                    pod=made.pod,
                    pod_uid=f"uid-{made.pod}",
                    resource=made.resource,
                    start=NOW,
                )
            )

        def release(
            made: Allocation = made, start: threading.Barrier = start, out: list[object] = released
        ) -> None:
            start.wait(5)
            try:
                out.append(reserver.release(made.id))
            except ReservationRefusedError as error:
                out.append(error.status)

        threads = [threading.Thread(target=claim), threading.Thread(target=release)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        row = ledger.get(made.id)
        assert row is not None
        if claimed == [True]:
            assert (row.status, row.end) == (Status.ACTIVE, None), f"round {round_}: released after a claim"
            assert released in ([409], [None]), released
            outcomes["claimed"] += 1
            ledger.record_end(made.id, NOW)  # the pod ends, so the next round has room
            cache.forget(made.id)
        else:
            assert claimed == [False] and row.status is Status.RELEASED
            outcomes["released"] += 1
    assert sum(outcomes.values()) >= 20
