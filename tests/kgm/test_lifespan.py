"""Background work runs from the app's startup to its shutdown: building the app starts nothing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from kgm.lifespan import Background, Service, Worker
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.kgm.test_live_serve import kubeconfig
from tests.support.kube_emulator import KubeEmulator

LIVE_THREADS = {
    "leader",
    "resync",
    "reflector-gpunodes",
    "reflector-pods",
    "reflector-nodes",
    "leadership",
    "reflector-gpuallocations",
    "gpuallocation-resync",
    "mig-planner",  # the default recommend mode plans every 30 s
    "reflector-gpuquotas",
    "reflector-resourcequotas",
    "quota-status",  # the leader writes GpuQuota status
}


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[None]:
    """The app's startup on entry and its shutdown on exit, on one event loop, as uvicorn runs them."""
    lifespan = app.router.lifespan_context(app)
    with asyncio.Runner() as runner:
        runner.run(lifespan.__aenter__())
        try:
            yield
        finally:
            runner.run(lifespan.__aexit__(None, None, None))


def loop(stop: threading.Event) -> None:
    stop.wait()


def running_names() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """A worker that does not listen to its stop event until the test ends."""
    release = threading.Event()
    yield release
    release.set()


def test_adding_work_starts_no_thread() -> None:
    before = threading.active_count()
    background = Background()
    background.add(Worker("idle-1", loop))
    background.add(Worker("idle-2", loop))
    assert threading.active_count() == before
    assert background.threads == ()


def test_start_runs_each_worker_on_a_named_daemon_thread_and_shutdown_joins_them() -> None:
    background = Background()
    for name in ("idle-1", "idle-2"):
        background.add(Worker(name, loop))
    background.start()
    assert [(t.name, t.daemon, t.is_alive()) for t in background.threads] == [
        ("idle-1", True, True),
        ("idle-2", True, True),
    ]
    assert background.shutdown() == []
    assert background.stop.is_set()
    assert not any(thread.is_alive() for thread in background.threads)


def test_a_second_start_starts_nothing_more() -> None:
    background = Background()
    background.add(Worker("idle", loop))
    background.start()
    background.start()
    try:
        assert len(background.threads) == 1
    finally:
        background.shutdown()


def test_work_added_after_the_start_is_refused() -> None:
    background = Background()
    background.start()
    with pytest.raises(RuntimeError, match="late"):
        background.add(Worker("late", loop))
    background.shutdown()


def test_a_thread_that_does_not_stop_is_logged_and_left_within_the_timeout(
    stuck: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    background = Background(join_timeout_s=0.2)
    background.add(Worker("deaf", lambda stop: stuck.wait()))
    background.add(Worker("idle", loop))
    background.start()
    with caplog.at_level(logging.WARNING, logger="kgm.lifespan"):
        assert background.shutdown() == ["deaf"]
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "serve.background_not_stopped"]
    assert record.threads == ["deaf"]  # type: ignore[attr-defined]


def test_services_start_before_the_workers_and_close_in_reverse_order() -> None:
    calls: list[str] = []
    background = Background()
    background.add(Worker("worker", lambda stop: calls.append("worker ran") or stop.wait()))
    for n in ("a", "b"):
        start, close = functools.partial(calls.append, f"start {n}"), functools.partial(calls.append, n)
        background.add(Service(n, start=start, close=close))
    with background.running():
        pass
    assert calls[:2] == ["start a", "start b"]
    assert calls[-2:] == ["b", "a"]


def test_a_service_that_fails_to_close_does_not_keep_the_others_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise OSError("boom")

    background = Background()
    background.add(Worker("idle", loop))
    background.add(Service("broken", start=lambda: None, close=broken))
    background.start()
    with caplog.at_level(logging.ERROR, logger="kgm.lifespan"):
        assert background.shutdown() == []
    assert any(getattr(r, "service", None) == "broken" for r in caplog.records)


# -- The assembled app ---------------------------------------------------------------------------------


def notifications(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "endpoints": [
                    {"name": "chat", "format": "generic", "url": "http://127.0.0.1:9/h", "events": ["*"]}
                ]
            }
        )
    )
    return path


def test_the_standalone_app_starts_its_work_at_startup_and_stops_it_at_shutdown(tmp_path: Path) -> None:
    settings = ServeSettings(inventory="demo", notifications=notifications(tmp_path / "notify.json"))
    before = running_names()
    app, parts = assembled_app(settings, CollectorRegistry())
    try:
        assert running_names() == before, "building the app started threads"
        with serving(app):
            assert {"watchdog", "kgm-notify"} <= running_names() - before
        assert running_names() == before
    finally:
        parts.close()


def test_the_live_app_starts_its_watches_at_startup_and_joins_them_at_shutdown(
    kube_emulator: KubeEmulator, tmp_path: Path
) -> None:
    settings = ServeSettings(
        inventory=None,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        environ={"KUBECONFIG": str(kubeconfig(kube_emulator.url, tmp_path / "config"))},
        watch_timeout_s=1,
    )
    before = running_names()
    app, parts = assembled_app(settings, CollectorRegistry())
    try:
        assert running_names() == before, "building the app started threads"
        with serving(app):
            assert {t.name for t in parts.background.threads} == LIVE_THREADS
            assert all(thread.is_alive() for thread in parts.background.threads)
        assert parts.stop.is_set()
        assert not any(thread.is_alive() for thread in parts.background.threads)
    finally:
        parts.close()
