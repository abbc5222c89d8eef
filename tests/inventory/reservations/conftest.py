"""Fixtures for the reservation tests: an in-memory SQL ledger and a controller rig over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inventory.ledger.sql import SqlLedger
from tests.inventory.reservations.controller_support import Rig


@pytest.fixture
def ledger() -> Iterator[SqlLedger]:
    with SqlLedger.open("sqlite:///:memory:") as ledger:
        yield ledger


@pytest.fixture
def rig(ledger: SqlLedger) -> Rig:
    return Rig(ledger)
