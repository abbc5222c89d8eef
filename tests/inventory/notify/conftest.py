"""Fixtures for the notification tests: loopback HTTP receivers, a metrics registry, and
notifiers closed before the receivers they send to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inventory.notify.formats import NotificationSettings
from inventory.notify.sender import Notifier
from tests.inventory.receivers import OK, Receiver, Reply


@pytest.fixture()
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*script: Reply, default: Reply = OK, path: str = "/hook") -> Receiver:
        made.append(Receiver(*script, default=default, path=path))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture()
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture()
def notifiers(registry: CollectorRegistry, receivers: Any) -> Iterator[Callable[..., Notifier]]:
    """Closed before the receivers (it depends on them), so no request is left in flight."""
    made: list[Notifier] = []

    def make(config: NotificationSettings, *, start: bool = True, **kw: Any) -> Notifier:
        kw.setdefault("registry", registry)
        made.append(Notifier(config, **kw))
        return made[-1].start() if start else made[-1]

    yield make
    for notifier in made:
        notifier.close(timeout=0.5)
