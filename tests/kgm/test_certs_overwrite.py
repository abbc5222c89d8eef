"""`kgm certs` keeps an existing CA unless told otherwise: a new CA made by mistake would leave the
webhook's caBundle and kube-scheduler's client certificate trusting the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgm.cli import main

CERTS = ["certs", "--service", "kgm", "--namespace", "kgm-system"]


def test_an_existing_ca_is_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CERTS, "--out", str(tmp_path)], {}) == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}
    capsys.readouterr()

    assert main([*CERTS, "--out", str(tmp_path)], {}) == 2

    captured = capsys.readouterr()
    assert str(tmp_path / "ca.crt") in captured.err
    assert "--force" in captured.err
    assert captured.out == ""  # no caBundle printed for a CA that was not made
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_force_replaces_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CERTS, "--out", str(tmp_path)], {}) == 0
    old_ca = (tmp_path / "ca.crt").read_bytes()

    assert main([*CERTS, "--out", str(tmp_path), "--force"], {}) == 0

    assert (tmp_path / "ca.crt").read_bytes() != old_ca


@pytest.mark.parametrize("existing", ["tls.crt", "client.key", "notes.txt"])
def test_a_directory_without_a_ca_is_written(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("left over")
    assert main([*CERTS, "--out", str(tmp_path)], {}) == 0
    assert (tmp_path / "ca.crt").is_file()
