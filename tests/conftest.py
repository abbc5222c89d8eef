"""Session-wide fixtures shared by every test package."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared``: fixtures, vendored OpenAPI documents and hooks, cloned next to the repo."""
    return Path(__file__).resolve().parents[1].parent / "shared"
