"""The OpenAPI document: valid OpenAPI 3.1, the app's routes exactly, served as it is written."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from starlette.routing import Route

from inventory.api import ApiPath, TokenStore
from inventory.api.openapi import document
from inventory.domain.prices import PriceTable
from kgm.web.endpoint import JsonEndpoint
from kgm.web.routes import build_api_routes
from tests.inventory.api import NOW, FakeReservations, ListLedger, cluster_cache, harness, write_tokens


def app_operations() -> dict[tuple[str, str], ApiPath]:
    ledger = ListLedger()
    routes = build_api_routes(
        ledger=ledger,
        snapshot=cluster_cache().snapshot,
        reservations=FakeReservations(ledger),
        prices=PriceTable(),
        tokens=TokenStore(),
        clock=lambda: NOW,
    )
    found: dict[tuple[str, str], ApiPath] = {}
    for route in routes:
        assert isinstance(route, Route)
        if isinstance(route.endpoint, JsonEndpoint) and isinstance(route.endpoint.handler, ApiPath):
            path = route.endpoint.handler
            found |= {(route.path, method.lower()): path for method in path.methods}
        else:
            assert route.path == "/api/v1/{rest:path}"  # the 404 for everything else
    return found


def test_the_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator not installed")
    validator.validate(document())
    assert document()["openapi"].startswith("3.1")


def test_every_schema_in_the_document_is_valid_json_schema_2020_12() -> None:
    spec = document()
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_document_names_every_route_of_the_app_and_no_other() -> None:
    spec = document()
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }
    assert documented == set(app_operations())


def test_the_document_says_which_operations_need_a_token() -> None:
    spec = document()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert spec["security"] == [{"bearerAuth": []}]
    for (path, method), endpoint in app_operations().items():
        operation = spec["paths"][path][method]
        is_open = operation.get("security") == []
        assert is_open is (endpoint.roles is None), (path, method)
        if not is_open:
            assert "401" in operation["responses"], (path, method)


def test_every_path_parameter_is_declared() -> None:
    spec = document()
    for path, item in spec["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_the_app_serves_the_document_without_a_token(tmp_path: Path) -> None:
    ledger = ListLedger()
    h = harness(ledger, TokenStore.load(write_tokens(tmp_path / "tokens.yaml")))
    reply = h.get("/api/v1/openapi.json", role=None)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == document()


def test_response_schemas_list_every_field_so_the_document_cannot_fall_behind() -> None:
    spec = document()
    schema = {"$ref": "#/components/schemas/Reservation", "components": spec["components"]}
    answer = {"allocationId": "a", "allocatedResource": "r", "nodeName": None, "costPerHour": 1.0}
    words = {"status": "reserved", "statusText": "Reserved"}
    jsonschema.Draft202012Validator(schema).validate({**answer, **words})
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.Draft202012Validator(schema).validate({**answer, **words, "extra": 1})
