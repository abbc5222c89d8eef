"""The packages stay ruff-clean and mypy --strict clean: checked with the tests so CI enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["kgm", "webhook", "extender", "inventory"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_ruff_finds_nothing_in_the_packages_tests_and_benchmarks() -> None:
    result = run("ruff", "check", *PACKAGES, "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing_in_the_packages() -> None:
    result = run("mypy", "--strict", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
