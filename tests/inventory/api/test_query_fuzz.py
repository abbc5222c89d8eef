"""Bad query strings answer 400 naming the parameter, never 500 (nor 503 from the database): on every
ledger, PostgreSQL included (it refuses a NUL in text, SQLite does not)."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.api import TokenStore
from inventory.ledger.sql import SqlLedger
from inventory.ledger.store import Ledger
from tests.inventory.api import SEED, harness, open_ledger, write_tokens
from tests.support import postgres

LIST = "/api/v1/gpu/allocations"
COST = "/api/v1/gpu/cost/analysis"


def page(position: str | bytes) -> str:
    """The list at a cursor that encodes ``position`` as a real one does (base64url of JSON)."""
    raw = position.encode() if isinstance(position, str) else position
    return f"{LIST}?cursor={base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


@pytest.fixture(params=["list", "sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "list":
        yield from open_ledger("list")
    elif request.param == "sqlite":
        yield from open_ledger("sql")
    else:
        with postgres.fresh_schema(postgres.server_url_or_skip()) as url, SqlLedger.open(url) as ledger:
            for item in SEED:
                ledger.record_start(item)
            yield ledger


@pytest.mark.parametrize(
    ("path", "says"),
    [
        pytest.param(f"{LIST}?limit={'9' * 5000}", "limit must be", id="a 5,000-digit limit"),
        pytest.param(f"{LIST}?limit={'1' * 19}", "limit must be", id="a limit of 19 digits"),
        pytest.param(f"{COST}?days={'1' * 5000}", "days must be", id="5,000-digit days"),
        pytest.param(f"{LIST}?limit=%D9%A3", "limit must be", id="a digit not in ASCII"),
        pytest.param(page("[" * 20000 + "]" * 20000), "cursor", id="deeply nested"),
        pytest.param(page("A" * 40_000), "cursor", id="a long cursor"),
        pytest.param(page('["0001-01-01T00:00:00+01:00", "x"]'), "cursor", id="before year 1 in UTC"),
        pytest.param(page('["9999-12-31T23:59:59-01:00", "x"]'), "cursor", id="after year 9999 in UTC"),
        pytest.param(page('["2026-01-01T00:00:00+00:00", "a\\u0000b"]'), "cursor", id="a NUL in the id"),
        pytest.param(page('["2026-01-01T00:00:00+00:00", [[1]]]'), "cursor", id="an id not a string"),
        pytest.param(page("[" + "9" * 5000 + ', "x"]'), "cursor", id="a huge number"),
        pytest.param(page('[1e999, "x"]'), "cursor", id="an infinite start"),
        pytest.param(page('["2026-01-01T00:00:00", "x"]'), "cursor", id="naive"),
        pytest.param(page(b"\xff\xfe"), "cursor", id="not UTF-8"),
        pytest.param(page("{}"), "cursor", id="an object"),
        pytest.param(f"{LIST}?cursor=%C3%A9", "cursor", id="not base64"),
        pytest.param(f"{LIST}?namespace=a%00b", "namespace", id="a NUL in a filter"),
        pytest.param(f"{LIST}?team=%00", "team", id="a NUL team"),
        pytest.param(f"{LIST}?status=%00", "status", id="a NUL status"),
        pytest.param(f"{LIST}?nodeName=n%00", "nodeName", id="a NUL node"),
    ],
)  # fmt: skip
def test_bad_query_parameters_answer_400_naming_them(
    any_ledger: Ledger, tmp_path: Path, path: str, says: str
) -> None:
    reply = harness(any_ledger, TokenStore.load(write_tokens(tmp_path / "tokens.yaml"))).get(path)
    assert reply.status_code == 400, reply.text[:300]
    assert reply.json()["error"]["message"].startswith(says)


def test_a_cursor_handed_out_still_pages_on_every_ledger(any_ledger: Ledger, tmp_path: Path) -> None:
    h = harness(any_ledger, TokenStore.load(write_tokens(tmp_path / "tokens.yaml")))
    first = h.get(f"{LIST}?limit=2").json()["pagination"]["nextCursor"]
    assert h.get(f"{LIST}?limit=2&cursor={first}").status_code == 200


_PIECES = [
    "limit", "cursor", "days", "status", "namespace", "team", "nodeName", "=", "&", "%00", "%ff", "%C3%A9",
    "9" * 40, "-1", "0", "1e9", "[", "]", "%5B%5B", "eyJ", "W1s", "null", "%09", "+", ";", "%", "%%", "x",
]  # fmt: skip


@pytest.mark.parametrize("path", [LIST, COST, "/api/v1/gpu/devices", "/api/v1/gpu/overview"])
def test_random_query_strings_never_answer_500(any_ledger: Ledger, tmp_path: Path, path: str) -> None:
    h = harness(any_ledger, TokenStore.load(write_tokens(tmp_path / "tokens.yaml")))
    rng = random.Random(f"kgm-{path}")  # the same strings every run
    for _ in range(60):
        query = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12)))
        reply = h.get(f"{path}?{query}")
        assert reply.status_code in (200, 400), (query, reply.status_code, reply.text[:200])
