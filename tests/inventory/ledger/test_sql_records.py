"""Recording allocations in the SQL ledger: every field read back as written, starts idempotent, ends
once, reservations claimed once, open allocations, all-or-nothing batches, naive datetimes refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.allocation import Allocation, AllocationFilter, Status
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import LedgerError
from tests.inventory.ledger.sql_support import FULL, RESERVATION, T0, US, H, alloc


@pytest.mark.parametrize("allocation", [FULL, RESERVATION], ids=["every-field", "none-fields"])
def test_get_returns_every_field_as_recorded(ledger: SqlLedger, allocation: Allocation) -> None:
    assert ledger.record_start(allocation) is True
    got = ledger.get(allocation.id)
    assert got == allocation
    assert got is not None
    assert str(got.hourly_price) == str(allocation.hourly_price)  # the same digits, scale included
    assert str(got.cost_limit) == str(allocation.cost_limit)
    for moment in (got.start, got.end, got.expires_at):
        assert moment is None or moment.tzinfo == UTC
    assert isinstance(got.device_ids, tuple)
    assert isinstance(got.status, Status)


def test_get_of_an_unknown_id_is_none(ledger: SqlLedger) -> None:
    assert ledger.get("nobody") is None


def test_record_start_is_idempotent(ledger: SqlLedger) -> None:
    first = alloc("a")
    assert ledger.record_start(first) is True
    assert ledger.record_start(dataclasses.replace(first, pod="renamed")) is False
    assert ledger.get(first.id) == first


def test_record_end_closes_once(ledger: SqlLedger) -> None:
    a = alloc("a")
    ledger.record_start(a)
    end = T0 + timedelta(hours=3)
    assert ledger.record_end(a.id, end, inferred=True) is True
    assert ledger.record_end(a.id, end + timedelta(hours=1)) is False
    assert ledger.get(a.id) == dataclasses.replace(a, end=end, end_inferred=True, status=Status.RELEASED)


def test_record_end_stores_the_closing_status(ledger: SqlLedger) -> None:
    ledger.record_start(RESERVATION)
    assert ledger.record_end(RESERVATION.id, T0 + US, status=Status.EXPIRED) is True
    got = ledger.get(RESERVATION.id)
    assert got is not None
    assert (got.status, got.end, got.end_inferred) == (Status.EXPIRED, T0 + US, False)


def test_record_end_of_an_unknown_id_is_false(ledger: SqlLedger) -> None:
    assert ledger.record_end("nobody", T0) is False


@pytest.mark.parametrize("status", [Status.RESERVED, Status.ACTIVE])
def test_record_end_refuses_an_open_status(ledger: SqlLedger, status: Status) -> None:
    with pytest.raises(ValueError, match="ends as"):
        ledger.record_end("x", T0, status=status)


def claim(ledger: SqlLedger, reservation_id: str, **fields: Any) -> bool:
    """``ledger.claim`` by the pod RESERVATION is for (ml/notebook, a whole GPU), or as ``fields`` say."""
    values: dict[str, Any] = {
        "namespace": "ml", "pod": "notebook", "pod_uid": "uid-nb", "resource": "nvidia.com/gpu", "start": T0,
        **fields,
    }  # fmt: skip
    return ledger.claim(reservation_id, **values)


def test_claim_turns_a_reservation_into_the_pods_active_allocation(ledger: SqlLedger) -> None:
    ledger.record_start(RESERVATION)
    started = T0 + timedelta(minutes=5)
    assert claim(ledger, RESERVATION.id, start=started) is True
    expected = dataclasses.replace(RESERVATION, status=Status.ACTIVE, pod_uid="uid-nb", start=started)
    assert ledger.get(RESERVATION.id) == expected
    assert claim(ledger, RESERVATION.id, pod_uid="uid-other", start=started) is False
    assert ledger.get(RESERVATION.id) == expected


@pytest.mark.parametrize(
    "stranger",
    [
        pytest.param({"namespace": "elsewhere"}, id="another namespace"),
        pytest.param({"pod": "notebook-0"}, id="another pod"),
        pytest.param({"resource": "nvidia.com/mig-1g.10gb"}, id="another resource"),
    ],
)
def test_only_the_pod_a_reservation_names_claims_it(ledger: SqlLedger, stranger: dict[str, str]) -> None:
    ledger.record_start(RESERVATION)
    assert claim(ledger, RESERVATION.id, **stranger) is False
    assert ledger.get(RESERVATION.id) == RESERVATION


def test_a_reservation_naming_no_pod_is_claimed_by_any_pod_of_its_namespace(ledger: SqlLedger) -> None:
    ledger.record_start(dataclasses.replace(RESERVATION, pod=""))
    assert claim(ledger, RESERVATION.id, namespace="elsewhere", pod="x") is False
    assert claim(ledger, RESERVATION.id, pod="any-pod") is True
    got = ledger.get(RESERVATION.id)
    assert got is not None and (got.status, got.pod) == (Status.ACTIVE, "any-pod")


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.RELEASED, Status.EXPIRED])
def test_claim_takes_only_a_reservation_still_reserved(ledger: SqlLedger, status: Status) -> None:
    row = dataclasses.replace(RESERVATION, status=status)
    ledger.record_start(row)
    assert claim(ledger, row.id) is False
    assert claim(ledger, "nobody") is False
    assert ledger.get(row.id) == row


def test_one_reservation_at_a_time_per_namespace_and_pod(ledger: SqlLedger) -> None:
    assert ledger.record_reservation(RESERVATION) is True
    again = dataclasses.replace(RESERVATION, id="reservation-2")
    assert ledger.record_reservation(again) is False
    assert ledger.get(again.id) is None
    assert (
        ledger.record_reservation(dataclasses.replace(again, id="reservation-3", namespace="other")) is True
    )
    assert ledger.end_reservation(RESERVATION.id, T0 + H)
    assert ledger.record_reservation(again) is True  # the first one ended


def test_open_allocations_are_the_reserved_and_active_ones(ledger: SqlLedger) -> None:
    rows = [
        alloc(status.value, status=status, start=T0 + timedelta(minutes=i)) for i, status in enumerate(Status)
    ]
    for row in rows:
        ledger.record_start(row)
    assert ledger.open_allocations() == [r for r in rows if r.status in (Status.RESERVED, Status.ACTIVE)]
    ledger.record_end(rows[1].id, T0 + timedelta(hours=1))
    assert [a.status for a in ledger.open_allocations()] == [Status.RESERVED]


def test_record_many_inserts_new_and_closes_open(ledger: SqlLedger) -> None:
    known, closed = alloc("known"), alloc("closed")
    ledger.record_many([known, closed], [(closed.id, T0 + H, False)])
    new = alloc("new")
    ends = [(known.id, T0 + 2 * H, True), (closed.id, T0 + 3 * H, True), ("nobody", T0, False)]
    ledger.record_many([dataclasses.replace(known, pod="renamed"), new], ends)
    assert ledger.get(new.id) == new
    assert ledger.get(known.id) == dataclasses.replace(
        known, end=T0 + 2 * H, end_inferred=True, status=Status.RELEASED
    )
    assert ledger.get(closed.id) == dataclasses.replace(closed, end=T0 + H, status=Status.RELEASED)


@pytest.mark.parametrize("broken", ["a-start", "an-end"])
def test_record_many_is_all_or_nothing(ledger: SqlLedger, broken: str) -> None:
    running = alloc("running")
    ledger.record_start(running)
    starts = [alloc("new-1"), alloc("new-2"), alloc("new-3")]
    ends = [(running.id, T0 + H, False)]
    if broken == "a-start":
        starts.insert(2, alloc("bad", count=-1))  # breaks CHECK (count >= 0) in the database
        error: type[Exception] = LedgerError
    else:
        ends.append(("other", datetime(2026, 3, 1, 13, 0), False))  # naive: refused before the database
        error = ValueError
    with pytest.raises(error):
        ledger.record_many(starts, ends)
    assert ledger.find(AllocationFilter()).items == [running]
    assert ledger.record_start(starts[0]) is True  # and the ledger is usable afterwards


def test_naive_datetimes_are_refused(ledger: SqlLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_start(alloc("a", start=datetime(2026, 3, 1)))
    assert ledger.find(AllocationFilter()).total == 0


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"cost_limit": Decimal("1e26")}, id="a cost limit no answer can round"),
        pytest.param({"cost_limit": Decimal("NaN")}, id="not a number"),
        pytest.param({"hourly_price": Decimal("Infinity")}, id="an infinite price"),
        pytest.param({"hourly_price": Decimal("-1")}, id="a negative price"),
    ],
)
def test_amounts_out_of_range_are_refused_and_nothing_is_written(
    ledger: SqlLedger, fields: dict[str, Decimal]
) -> None:
    row = dataclasses.replace(RESERVATION, **fields)
    with pytest.raises(ValueError, match="amounts"):
        ledger.record_start(row)
    with pytest.raises(ValueError, match="amounts"):
        ledger.record_many([row], [])
    assert ledger.get(row.id) is None


@pytest.mark.parametrize(
    ("status", "ended"),
    [(Status.RESERVED, True), (Status.ACTIVE, False), (Status.RELEASED, False), (Status.EXPIRED, False)],
)
def test_end_reservation_ends_only_a_row_still_reserved(
    ledger: SqlLedger, status: Status, ended: bool
) -> None:
    row = dataclasses.replace(RESERVATION, status=status)
    ledger.record_start(row)
    assert ledger.end_reservation(row.id, T0 + H) is ended
    got = ledger.get(row.id)
    assert got is not None
    assert got.status is (Status.RELEASED if ended else status)
    assert ledger.end_reservation("nobody", T0) is False
