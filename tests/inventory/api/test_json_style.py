"""One JSON style in every answer: camelCase field names, one name for an allocation's id
(``allocationId``), and ``status`` with ``statusText`` telling the same state wherever both appear."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from inventory.api import Role, TokenStore
from inventory.api.openapi import document
from inventory.ledger.store import Ledger
from tests.inventory.api import IDS, harness
from tests.inventory.api.test_allocations import BODY

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
#: Objects whose keys are data (team, namespace, model and profile names), not field names.
DATA_KEYED = frozenset({"byTeam", "byNamespace", "byModel", "byProfile", "profiles"})
READS = [
    "/api/v1/health",
    "/api/v1/gpu/devices",
    "/api/v1/gpu/allocations",
    f"/api/v1/gpu/allocations/{IDS['a4']}",
    "/api/v1/gpu/overview",
    "/api/v1/gpu/mig/plan",
    "/api/v1/gpu/quotas",
    "/api/v1/gpu/cost/analysis",
    "/api/v1/gpu/quotas",
]


def field_names(value: Any, data_keyed: frozenset[str] = DATA_KEYED) -> Iterator[str]:
    """Every key of a JSON answer, but not the keys under ``data_keyed`` (names from the data)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            if key not in data_keyed:
                yield from field_names(item, data_keyed)
    elif isinstance(value, list):
        for item in value:
            yield from field_names(item, data_keyed)


def objects(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from objects(item)


def answers(ledger: Ledger, tokens: TokenStore) -> list[tuple[str, Any]]:
    h = harness(ledger, tokens)
    found = [(path, h.get(path, role=Role.ADMIN).json()) for path in READS]
    made = h.request("POST", "/api/v1/gpu/allocations", role=Role.USER, json=BODY)
    found.append(("POST allocations", made.json()))
    released = h.request("DELETE", f"/api/v1/gpu/allocations/{IDS['a4']}", role=Role.ADMIN)
    found.append(("DELETE allocation", released.json()))
    found.append(("a 404", h.get("/api/v1/gpu/allocations/nope", role=Role.ADMIN).json()))
    return found


def test_every_field_of_every_answer_is_camel_case(ledger: Ledger, tokens: TokenStore) -> None:
    for path, body in answers(ledger, tokens):
        assert "data" in body or "error" in body, path
        wrong = sorted({name for name in field_names(body) if not CAMEL.match(name)})
        assert wrong == [], f"{path}: {wrong}"


def test_an_allocation_is_named_by_allocation_id_everywhere(ledger: Ledger, tokens: TokenStore) -> None:
    seen = 0
    for path, body in answers(ledger, tokens):
        for obj in objects(body):
            assert "id" not in obj, path
            seen += "allocationId" in obj
    assert seen >= 5  # the list's items, one, the reservation and the release


def test_status_and_status_text_tell_the_same_state(ledger: Ledger, tokens: TokenStore) -> None:
    pairs = {
        (obj["status"], obj["statusText"])
        for _, body in answers(ledger, tokens)
        for obj in objects(body)
        if "statusText" in obj
    }
    assert {status for status, _ in pairs} >= {"reserved", "active", "released"}
    assert all(text == status.capitalize() for status, text in pairs), pairs


@pytest.mark.parametrize("schema", sorted(document()["components"]["schemas"]))
def test_the_documented_fields_are_camel_case(schema: str) -> None:
    definition = document()["components"]["schemas"][schema]
    names = [name for obj in objects(definition) for name in obj.get("properties", {})]
    assert [name for name in names if not CAMEL.match(name)] == []
    assert "id" not in names
