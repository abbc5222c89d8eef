"""The layering is enforced: the import-linter contracts in pyproject.toml hold, checked with the tests.

The contracts say that dependencies point one way (``kgm`` -> ``webhook``, ``extender`` -> ``inventory``),
that inside ``inventory`` the data flow reads top-down (api; reservations, notify; layouts; ledger,
live; node, leader; kube; domain), that the domain core imports no I/O library, and that each outside
client library is imported by its one adapter only.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

from tests.support.data import REPO

PYPROJECT = REPO / "pyproject.toml"


def contracts() -> list[dict[str, Any]]:
    return list(tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"])


def test_every_import_linter_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    configuration.configure()  # what the lint-imports command does first: the readers of pyproject.toml
    kept = lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


@pytest.mark.parametrize(
    ("client", "adapter"),
    [
        ("kubernetes", "inventory.kube.**"),
        ("pynvml", "inventory.node.nvml"),
        ("grpc", "inventory.node.podresources"),
        ("sqlite3", "inventory.ledger.dialects"),
        ("psycopg", "inventory.ledger.dialects"),
    ],
)
def test_each_outside_client_has_exactly_one_adapter(client: str, adapter: str) -> None:
    (contract,) = [
        c for c in contracts() if client in c.get("forbidden_modules", []) and "ignore_imports" in c
    ]
    assert contract["source_modules"] == ["kgm", "webhook", "extender", "inventory"]
    assert contract["ignore_imports"] == [f"{adapter} -> {m}" for m in contract["forbidden_modules"]]


def test_the_domain_may_not_import_io_libraries_or_the_layers_above_it() -> None:
    (contract,) = [c for c in contracts() if c.get("source_modules") == ["inventory.domain"]]
    forbidden = set(contract["forbidden_modules"])
    assert {
        "kubernetes",
        "grpc",
        "psycopg",
        "sqlite3",
        "pynvml",
        "httpx",
        "logging",
        "threading",
    } <= forbidden
    assert {"inventory.live", "inventory.node", "inventory.ledger", "inventory.api"} <= forbidden


def test_inside_inventory_the_layers_read_as_the_data_flows() -> None:
    (contract,) = [c for c in contracts() if c.get("containers") == ["inventory"]]
    assert contract["layers"] == [
        "api",
        "reservations | notify",
        "layouts",
        "ledger | live",
        "node | leader",
        "kube",
        "domain",
    ]
