"""The Reflector end to end on the Kubernetes adapter against kmock's emulator: it syncs, follows
changes, resumes from bookmarks, lists again after a 410 and waits out an unavailable server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from inventory.kube import (
    KubeError,
    KubeUnavailableError,
    KubeVersionTooLargeError,
    Listing,
    WatchEvent,
    error_for_status,
)
from inventory.live.reflector import Backoff, Reflector
from tests.inventory.kube_objects import gpunode
from tests.support.kube_emulator import (
    GPUNODES,
    KubeEmulator,
    SeenRequest,
    eventually,
    running_emulator,
)


class Cache:
    """A consumer like the inventory cache: GpuNodes by name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}
        self.lists: list[set[str]] = []  # the names in each complete list handed over

    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        with self.lock:
            self.objects = {item["metadata"]["name"]: item for item in items}
            self.lists.append(set(self.objects))

    def apply(self, event: WatchEvent) -> None:
        with self.lock:
            name = event.object["metadata"]["name"]
            if event.type == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = event.object

    def generation(self, name: str) -> object:
        with self.lock:
            return self.objects.get(name, {}).get("status", {}).get("heartbeatGeneration")


@pytest.fixture()
def reflected(kube_emulator: KubeEmulator) -> Iterator[tuple[Reflector, Cache]]:
    kube = kube_emulator.client
    cache = Cache()
    reflector = Reflector(
        name="gpunodes",
        list_fn=kube.list_gpunodes,
        watch_fn=kube.watch_gpunodes,
        on_replace=cache.replace,
        on_event=cache.apply,
        watch_timeout_seconds=1,
    )
    stop = threading.Event()
    thread = threading.Thread(target=reflector.run, args=(stop,), name="reflector-gpunodes")
    kube.create_gpunode(gpunode("n1"))
    thread.start()
    try:
        yield reflector, cache
    finally:
        stop.set()
        thread.join(timeout=5)  # at most the rest of a 1-second watch
        assert not thread.is_alive()


def test_the_reflector_syncs_sees_later_changes_and_resumes_from_bookmarks(
    kube_emulator: KubeEmulator, reflected: tuple[Reflector, Cache]
) -> None:
    reflector, cache = reflected
    assert reflector.has_synced.wait(timeout=5)
    assert set(cache.objects) == {"n1"}

    kube_emulator.client.update_gpunode_status("n1", {"heartbeatGeneration": 3})
    eventually(lambda: cache.generation("n1") == 3)
    kube_emulator.client.create_gpunode(gpunode("n2"))
    eventually(lambda: "n2" in cache.objects)

    # The first watch ends after its second: the next one starts from the bookmark that closed it.
    def first_two_watches() -> list[SeenRequest] | None:
        seen = kube_emulator.requests(action="watch")
        return seen[:2] if len(seen) >= 2 else None

    first, second = eventually(first_two_watches, timeout=5)
    assert int(second.params["resourceVersion"]) > int(first.params["resourceVersion"])
    assert (reflector.relists, reflector.failures) == (0, 0)


def test_the_reflector_survives_a_410_by_listing_again(
    kube_emulator: KubeEmulator, reflected: tuple[Reflector, Cache]
) -> None:
    reflector, cache = reflected
    assert reflector.has_synced.wait(timeout=5)
    kube_emulator.delete(GPUNODES, "n1")
    kube_emulator.client.create_gpunode(gpunode("n2"))
    kube_emulator.inject_watch_gone()  # for the next watch the reflector opens (the open one lasts 1 s)
    eventually(lambda: len(cache.lists) == 2, timeout=5)
    assert cache.lists == [{"n1"}, {"n2"}]  # the complete list again, changes included
    assert reflector.relists == 1
    kube_emulator.client.update_gpunode_status("n2", {"heartbeatGeneration": 9})
    eventually(lambda: cache.generation("n2") == 9)


def test_the_reflector_waits_out_an_unavailable_server(
    kube_emulator: KubeEmulator, reflected: tuple[Reflector, Cache]
) -> None:
    reflector, cache = reflected
    assert reflector.has_synced.wait(timeout=5)
    with kube_emulator.unavailable():
        eventually(lambda: reflector.failures >= 1, timeout=5)
    kube_emulator.client.update_gpunode_status("n1", {"heartbeatGeneration": 4})
    eventually(lambda: cache.generation("n1") == 4, timeout=5)


def test_the_reflector_lists_again_when_the_server_has_not_seen_its_version() -> None:
    """etcd restored from an older backup: the API server's revision went back, and a watch from the
    version the reflector holds answers "Too large resource version" (504) for ever. client-go lists
    again; so must we, not watch from the same version again and again."""
    with running_emulator() as before, running_emulator() as restored:
        restored.client.create_gpunode(gpunode("n1"))  # the backup: revision 1
        for name in ("n1", "n2", "n3"):
            before.client.create_gpunode(gpunode(name))  # revision 3 before the disaster
        server = {"now": before}  # the same address, whichever server answers there

        def list_fn() -> Listing:
            return server["now"].client.list_gpunodes()

        def watch_fn(version: str, timeout: int) -> Iterator[WatchEvent]:
            return server["now"].client.watch_gpunodes(version, timeout)

        cache = Cache()
        reflector = Reflector(
            name="gpunodes",
            list_fn=list_fn,
            watch_fn=watch_fn,
            on_replace=cache.replace,
            on_event=cache.apply,
            backoff=Backoff(initial=0.01, maximum=0.05),
            watch_timeout_seconds=1,
        )
        stop = threading.Event()
        thread = threading.Thread(target=reflector.run, args=(stop,), name="reflector-gpunodes")
        thread.start()
        try:
            assert reflector.has_synced.wait(timeout=5)
            assert cache.lists == [{"n1", "n2", "n3"}] and reflector.resource_version == "3"
            server["now"] = restored  # the next watch (the open one ends within 1 s) goes there
            eventually(lambda: len(cache.lists) == 2, timeout=5)
            assert cache.lists[1] == {"n1"}
            assert reflector.resource_version == "1"
            restored.client.create_gpunode(gpunode("n4"))
            eventually(lambda: "n4" in cache.objects, timeout=5)
        finally:
            stop.set()
            thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        # kube-apiserver 1.18+: the cause says it.
        (
            {
                "code": 504,
                "reason": "Timeout",
                "message": "Too large resource version: 9, current: 3",
                "details": {
                    "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]
                },
            },
            KubeVersionTooLargeError,
        ),
        # Before 1.17: the message only.
        (
            {"code": 504, "reason": "Timeout", "message": "Too large resource version: 9"},
            KubeVersionTooLargeError,
        ),
        ({"code": 504, "reason": "Timeout", "message": "request timed out"}, KubeUnavailableError),
    ],
)
def test_a_too_large_resource_version_is_told_apart_from_a_timeout(
    status: dict[str, Any], cls: type[KubeError]
) -> None:
    error = error_for_status(status["code"], "watch gpunodes", {"kind": "Status", **status})
    assert type(error) is cls
