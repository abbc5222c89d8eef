"""The ``store`` and ``ledger`` fixtures: every SQL ledger test that takes them runs on SQLite and on
PostgreSQL.

PostgreSQL is the server ``KGM_TEST_POSTGRES_URL`` names (``bash scripts/ci-postgres.sh`` starts one),
a fresh schema per test; without it the PostgreSQL cases are skipped, or fail when ``CI`` is set
(``tests/support/postgres.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.ledger.sql import SqlLedger
from tests.inventory.ledger.sql_support import Store, sqlite_query
from tests.support import postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        yield Store("sqlite", f"sqlite:///{path}", lambda statement: sqlite_query(path, statement))
        return
    with postgres.fresh_schema(postgres.server_url_or_skip()) as url:
        yield Store("postgresql", url, lambda statement: postgres.execute(url, statement))


@pytest.fixture()
def ledger(store: Store) -> Iterator[SqlLedger]:
    with SqlLedger.open(store.url) as opened:
        yield opened
