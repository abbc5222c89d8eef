"""Session-wide fixtures shared by every test package."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.kube_emulator import KubeEmulator


@pytest.fixture()
def kube_emulator() -> Iterator["KubeEmulator"]:
    """A Kubernetes API server (kmock's emulator, made stricter) on 127.0.0.1, served from a background
    thread: ``.url``, ``.client`` (an ``inventory.kube.KubeClient``), object helpers and fault injection.
    See ``tests/support/kube_emulator.py``."""
    from tests.support.kube_emulator import running_emulator  # noqa: PLC0415  (kmock loads only when used)

    with running_emulator() as kube:
        yield kube
