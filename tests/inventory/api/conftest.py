"""The ledger (every backend the suite can reach) and the token file that the REST API tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.api import TokenStore
from inventory.ledger.store import Ledger
from tests.inventory.api import LEDGERS, open_ledger, write_tokens


@pytest.fixture(params=LEDGERS)
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    yield from open_ledger(request.param)


@pytest.fixture()
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore.load(write_tokens(tmp_path / "tokens.yaml"))
