"""The Reflector against scripted in-memory list and watch functions (no network), and its Backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from inventory.kube import KubeError, KubeGoneError, KubeUnavailableError, Listing, WatchEvent
from inventory.live.reflector import Backoff, Reflector
from tests.support.kube_emulator import eventually

NO_JITTER = 0.5  # what rand() returns for a wait of exactly the nominal length


# Backoff: a pure table


@pytest.mark.parametrize(
    ("backoff", "rand", "expected"),
    [
        (Backoff(jitter=0), NO_JITTER, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),
        (Backoff(), NO_JITTER, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),
        (Backoff(initial=1, maximum=10, factor=3, jitter=0.5), 0.0, [0.5, 1.5, 4.5, 5, 5]),
        (Backoff(initial=1, maximum=10, factor=3, jitter=0.5), 1.0, [1.5, 4.5, 10, 10, 10]),
        (Backoff(initial=2, maximum=2, factor=1, jitter=0), 0.9, [2, 2, 2]),
        (Backoff(initial=0.1, maximum=1, factor=10, jitter=0.2), 0.0, [0.08, 0.8, 0.8]),
    ],
    ids=["no-jitter", "defaults-centred", "low-edge", "high-edge-capped", "constant", "big-factor"],
)
def test_backoff_waits_grow_by_the_factor_spread_by_jitter_and_capped(
    backoff: Backoff, rand: float, expected: list[float]
) -> None:
    delays = backoff.delays(lambda: rand)
    assert [round(next(delays), 6) for _ in expected] == pytest.approx(expected)


def test_backoff_jitter_stays_within_its_fraction_either_way() -> None:
    delays = Backoff(initial=10, maximum=10, jitter=0.2).delays()
    drawn = [next(delays) for _ in range(500)]
    assert all(8 <= d <= 10 for d in drawn)
    assert min(drawn) < 9 < max(drawn) or max(drawn) == 10


@pytest.mark.parametrize(
    "arguments",
    [
        {"initial": 0},
        {"initial": -1},
        {"initial": 5, "maximum": 1},
        {"factor": 0.5},
        {"jitter": 1},
        {"jitter": -0.1},
    ],
)
def test_backoff_refuses_parameters_that_make_no_sense(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**arguments)


# Scripted API server and consumer


def event(kind: str, name: str, version: str = "") -> WatchEvent:
    metadata = {"name": name} | ({"resourceVersion": version} if version else {})
    return WatchEvent(type=kind, object={"metadata": metadata})


def listing(version: str, *names: str) -> Listing:
    return Listing(
        items=[{"metadata": {"name": n, "resourceVersion": version}} for n in names], resource_version=version
    )


Step = Sequence[WatchEvent | Exception] | Exception


class ScriptedApi:
    """List and watch functions that answer from scripts; when the watch script runs out, a watch waits
    for ``stop`` (a quiet server). The last list answer repeats."""

    def __init__(
        self, *, lists: Sequence[Listing | Exception], watches: Sequence[Step], stop: threading.Event
    ):
        self.lists = list(lists)
        self.watches = list(watches)
        self.stop = stop
        self.list_calls = 0
        self.watched_from: list[str] = []

    def list_fn(self) -> Listing:
        self.list_calls += 1
        answer = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch_fn(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.stop.wait()
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for item in step:
            if isinstance(item, Exception):
                raise item
            yield item


class Consumer:
    def __init__(self) -> None:
        self.replaced: list[tuple[list[str], str]] = []
        self.events: list[tuple[str, str]] = []

    def on_replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        self.replaced.append(([i["metadata"]["name"] for i in items], resource_version))

    def on_event(self, watch_event: WatchEvent) -> None:
        self.events.append((watch_event.type, watch_event.object["metadata"]["name"]))


def reflector_for(
    api: ScriptedApi, consumer: Consumer, *, sleeps: list[float] | None = None, **options: Any
) -> Reflector:
    sleep: Callable[[float], object] | None = sleeps.append if sleeps is not None else None
    return Reflector(
        name="things",
        list_fn=api.list_fn,
        watch_fn=api.watch_fn,
        on_replace=options.pop("on_replace", consumer.on_replace),
        on_event=options.pop("on_event", consumer.on_event),
        sleep=sleep,
        rand=lambda: NO_JITTER,
        **options,
    )


@contextmanager
def running(reflector: Reflector, stop: threading.Event) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=reflector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=2)
        assert not thread.is_alive(), "the reflector did not stop"


# Behaviour


def test_the_consumer_gets_the_complete_list_then_each_change_watched_from_its_version() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[listing("10", "a", "b")],
        watches=[[event("ADDED", "c", "11"), event("MODIFIED", "a", "12"), event("DELETED", "b", "13")]],
        stop=stop,
    )
    consumer = Consumer()
    reflector = reflector_for(api, consumer, sleeps=[])
    with running(reflector, stop):
        eventually(lambda: len(consumer.events) == 3)
        assert reflector.has_synced.is_set()
    assert consumer.replaced == [(["a", "b"], "10")]
    assert consumer.events == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert api.watched_from[:2] == ["10", "13"]  # the second watch resumes after the last event
    assert (reflector.relists, reflector.restarts, reflector.failures) == (0, 1, 0)


def test_a_bookmark_advances_the_version_and_is_not_passed_on() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[listing("10", "a")],
        watches=[
            [event("MODIFIED", "a", "11"), WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "57"}})]
        ],
        stop=stop,
    )
    consumer = Consumer()
    reflector = reflector_for(api, consumer, sleeps=[])
    with running(reflector, stop):
        eventually(lambda: len(api.watched_from) == 2)
    assert consumer.events == [("MODIFIED", "a")]
    assert api.watched_from[:2] == ["10", "57"]
    assert reflector.resource_version == "57"


def test_events_without_a_version_keep_the_last_one() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[listing("10", "a")], watches=[[event("MODIFIED", "a")]], stop=stop)
    consumer = Consumer()
    with running(reflector_for(api, consumer, sleeps=[]), stop):
        eventually(lambda: len(api.watched_from) == 2)
    assert api.watched_from[:2] == ["10", "10"]


def test_gone_lists_again_and_hands_over_the_complete_new_list_without_waiting() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[listing("10", "a", "b"), listing("20", "b", "c")],
        watches=[
            [event("MODIFIED", "a", "11"), KubeGoneError("too old", status=410)],
            [event("ADDED", "d", "21")],
        ],
        stop=stop,
    )
    consumer = Consumer()
    sleeps: list[float] = []
    reflector = reflector_for(api, consumer, sleeps=sleeps)
    with running(reflector, stop):
        eventually(lambda: ("ADDED", "d") in consumer.events)
    assert consumer.replaced == [(["a", "b"], "10"), (["b", "c"], "20")]
    assert api.watched_from[:2] == ["10", "20"]
    assert (reflector.relists, sleeps) == (1, [])


def test_gone_again_and_again_with_no_progress_backs_off() -> None:
    stop = threading.Event()
    gone = KubeGoneError("too old", status=410)
    api = ScriptedApi(lists=[listing("10")], watches=[gone, gone, gone], stop=stop)
    sleeps: list[float] = []
    reflector = reflector_for(api, Consumer(), sleeps=sleeps)
    with running(reflector, stop):
        eventually(lambda: len(api.watched_from) == 4)
    assert reflector.relists == 3
    assert sleeps == [0.5, 1.0]  # the first 410 relists at once, the next ones wait


def test_an_unavailable_server_is_waited_out_with_growing_backoff_then_watched_from_the_same_version() -> (
    None
):
    stop = threading.Event()
    down = KubeUnavailableError("connection refused")
    api = ScriptedApi(
        lists=[listing("10", "a")],
        watches=[down, down, [event("MODIFIED", "a", "11")], down],
        stop=stop,
    )
    consumer = Consumer()
    sleeps: list[float] = []
    reflector = reflector_for(api, consumer, sleeps=sleeps)
    with running(reflector, stop):
        eventually(lambda: len(api.watched_from) == 5)
    assert sleeps == [0.5, 1.0, 0.5]  # reset after the watch that worked
    assert api.list_calls == 1
    assert api.watched_from == ["10", "10", "10", "11", "11"]
    assert (reflector.failures, reflector.restarts, reflector.relists) == (3, 4, 0)
    assert consumer.events == [("MODIFIED", "a")]


def test_a_failing_list_is_retried_and_only_a_successful_one_syncs() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[KubeUnavailableError("503"), KubeUnavailableError("503"), listing("10", "a")],
        watches=[],
        stop=stop,
    )
    consumer = Consumer()
    sleeps: list[float] = []
    reflector = reflector_for(api, consumer, sleeps=sleeps)
    with running(reflector, stop):
        eventually(reflector.has_synced.is_set)
        assert sleeps == [0.5, 1.0]
    assert consumer.replaced == [(["a"], "10")]
    assert reflector.relists == 0


def test_any_other_error_backs_off_then_lists_again() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[listing("10", "a"), listing("30", "a")],
        watches=[KubeError("forbidden", status=403)],
        stop=stop,
    )
    consumer = Consumer()
    sleeps: list[float] = []
    reflector = reflector_for(api, consumer, sleeps=sleeps)
    with running(reflector, stop):
        eventually(lambda: len(consumer.replaced) == 2)
    assert sleeps == [0.5]
    assert api.watched_from[:2] == ["10", "30"]


def test_a_watch_that_ends_at_once_with_nothing_is_a_failure_not_a_tight_loop() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[listing("10")], watches=[[], []], stop=stop)
    sleeps: list[float] = []
    reflector = reflector_for(api, Consumer(), sleeps=sleeps)
    with running(reflector, stop):
        eventually(lambda: len(api.watched_from) == 3)
    assert sleeps == [0.5, 1.0]
    assert api.list_calls == 1


def test_a_quiet_watch_that_runs_its_time_is_healthy() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[listing("10")], watches=[[], []], stop=stop)
    ticks = iter(range(0, 10_000, 100))  # every reading of the clock is 100 s later
    sleeps: list[float] = []
    reflector = reflector_for(api, Consumer(), sleeps=sleeps, clock=lambda: float(next(ticks)))
    with running(reflector, stop):
        eventually(lambda: len(api.watched_from) == 3)
    assert (sleeps, reflector.restarts) == ([], 2)


def test_a_failing_on_event_is_logged_and_the_next_events_still_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[listing("10", "a")],
        watches=[[event("ADDED", "bad", "11"), event("ADDED", "good", "12")]],
        stop=stop,
    )
    consumer = Consumer()

    def on_event(watch_event: WatchEvent) -> None:
        if watch_event.object["metadata"]["name"] == "bad":
            raise RuntimeError("consumer bug")
        consumer.on_event(watch_event)

    reflector = reflector_for(
        api, consumer, sleeps=[], on_event=on_event, logger=logging.getLogger("test.reflector")
    )
    with caplog.at_level(logging.ERROR, logger="test.reflector"), running(reflector, stop):
        eventually(lambda: consumer.events == [("ADDED", "good")])
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "reflector.callback_failed"]
    assert (record.reflector, record.callback) == ("things", "on_event")  # type: ignore[attr-defined]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert reflector.resource_version == "12"


def test_a_failing_on_replace_is_logged_and_retried_with_a_new_list(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[listing("10", "a"), listing("11", "a")], watches=[], stop=stop)
    consumer = Consumer()
    calls = 0

    def on_replace(items: list[dict[str, Any]], resource_version: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("consumer bug")
        consumer.on_replace(items, resource_version)

    sleeps: list[float] = []
    reflector = reflector_for(api, consumer, sleeps=sleeps, on_replace=on_replace)
    with caplog.at_level(logging.ERROR), running(reflector, stop):
        eventually(reflector.has_synced.is_set)
    assert consumer.replaced == [(["a"], "11")]
    assert sleeps == [0.5]
    assert [getattr(r, "callback", None) for r in caplog.records if r.levelno == logging.ERROR] == [
        "on_replace"
    ]


def test_stop_ends_a_backoff_at_once() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[KubeUnavailableError("down")], watches=[], stop=stop)
    reflector = reflector_for(api, Consumer(), backoff=Backoff(initial=30, maximum=30))  # waits on `stop`
    with running(reflector, stop):
        eventually(lambda: reflector.failures == 1)
        started = time.monotonic()
        stop.set()
    assert time.monotonic() - started < 1


def test_stop_ends_an_endless_stream_of_events_and_closes_it() -> None:
    stop = threading.Event()
    closed = threading.Event()

    def endless(resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        try:
            for n in range(11, 1_000_000):
                time.sleep(0.001)
                yield event("MODIFIED", "a", str(n))
        finally:
            closed.set()

    consumer = Consumer()
    reflector = Reflector(
        name="endless",
        list_fn=lambda: listing("10", "a"),
        watch_fn=endless,
        on_replace=consumer.on_replace,
        on_event=consumer.on_event,
    )
    with running(reflector, stop):
        eventually(lambda: len(consumer.events) >= 5)
        started = time.monotonic()
        stop.set()
    assert time.monotonic() - started < 1
    assert closed.is_set()
