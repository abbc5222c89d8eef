"""`kgm --version` says the version pip installed (the distribution's metadata), not a copy in code."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib

import pytest

from kgm.cli import DISTRIBUTION, main
from tests.support.data import REPO


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"], {})
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"kgm {importlib.metadata.version(DISTRIBUTION)}"


def test_the_distribution_named_is_this_project() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert importlib.metadata.version(DISTRIBUTION) == project["version"]


def test_the_console_script_prints_it() -> None:
    command = [sys.executable, "-m", "kgm.cli", "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kgm", importlib.metadata.version(DISTRIBUTION)]
