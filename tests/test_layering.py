"""Dependencies point one way: webhook and extender use inventory, inventory uses neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", ["inventory", "webhook", "extender"])
def test_core_packages_never_import_the_application_layer(package: str) -> None:
    assert not {f for f, m in imported_modules(package) if m == "kgm"}


def test_inventory_never_imports_webhook_or_extender() -> None:
    assert not {(f, m) for f, m in imported_modules("inventory") if m in ("webhook", "extender")}


@pytest.mark.parametrize("client", ["kubernetes", "pynvml", "sqlite3", "psycopg", "grpc"])
def test_at_most_one_module_imports_each_outside_client(client: str) -> None:
    importers = {
        f
        for package in ("inventory", "webhook", "extender", "kgm")
        for f, m in imported_modules(package)
        if m == client
    }
    assert len(importers) <= 1, importers
