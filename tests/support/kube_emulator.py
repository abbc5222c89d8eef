"""A Kubernetes API server on 127.0.0.1 for synchronous tests: kmock's emulator on a thread of its own.

The official client is synchronous and kmock is asyncio, so the emulator runs its own event loop in a
background thread; the test thread talks to it over HTTP (through :class:`inventory.kube.KubeClient`)
and through the helpers below, which hop onto that loop with ``asyncio.run_coroutine_threadsafe``::

    with running_emulator() as kube:                 # or the ``kube_emulator`` fixture
        kube.create(GPUNODES, {"metadata": {"name": "n1"}, "status": {...}})
        assert kube.client.get_gpunode("n1")["status"] == {...}
        kube.inject_watch_gone()                     # the next gpunodes watch ends with ERROR 410
        with kube.unavailable():                     # every API request answers 503 meanwhile
            ...

The server is :class:`tests.support.api_server_emulator.ApiServerEmulator` (kmock's emulator made to
behave like kube-apiserver: resourceVersions, watches from a version, status subresources). The harness
adds faults: :meth:`KubeEmulator.inject_watch_gone` (a one-shot kmock DSL reaction that ends the next
watch with an ERROR event of code 410, as a server does for an expired resourceVersion),
:meth:`KubeEmulator.inject_delay` (requests of one kind answered only after a while) and
:meth:`KubeEmulator.unavailable` (503 before any state changes: a kmock reaction would answer 503
but kmock would still store a create it intercepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.resources
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import kmock

from inventory.kube import KubeClient
from tests.support.api_server_emulator import HARNESS_HEADER, ApiServerEmulator, is_from_harness

T = TypeVar("T")

GPUNODES = "gpu.kgm.io/v1alpha1/gpunodes"
GPUALLOCATIONS = "gpu.kgm.io/v1alpha1/gpuallocations"
GPUQUOTAS = "gpu.kgm.io/v1alpha1/gpuquotas"
RESOURCEQUOTAS = "v1/resourcequotas"
PODS = "v1/pods"
NODES = "v1/nodes"

GPUNODE_RESOURCE = kmock.ResourceInfo(
    kind="GpuNode",
    singular="gpunode",
    namespaced=False,
    shortnames={"gn"},
    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    subresources={"status"},
)

GPUALLOCATION_RESOURCE = kmock.ResourceInfo(
    kind="GpuAllocation",
    singular="gpuallocation",
    namespaced=True,
    shortnames={"ga"},
    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    subresources={"status"},
)

GPUQUOTA_RESOURCE = kmock.ResourceInfo(
    kind="GpuQuota",
    singular="gpuquota",
    namespaced=True,
    shortnames={"gq"},
    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    subresources={"status"},
)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _bundled_resources() -> bytes:
    # kmock.load_bundled() uses the deprecated importlib.resources.read_binary: a warning, an error here.
    bundled = importlib.resources.files("kmock._internal").joinpath("resources.json.gz")
    return gzip.decompress(bundled.read_bytes())


@dataclass(frozen=True)
class SeenRequest:
    """A request the emulator served, for assertions (``params`` are the query parameters)."""

    method: str
    path: str
    params: dict[str, str]
    action: str | None
    from_harness: bool


def _path(
    resource: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    ref = kmock.resource(resource)
    base = f"/api/{ref.version}" if not ref.group else f"/apis/{ref.group}/{ref.version}"
    parts = [base, f"namespaces/{namespace}" if namespace else None, ref.plural, name, subresource]
    return "/".join(part for part in parts if part)


class HarnessError(Exception):
    """A request the harness sent was refused (the emulator's answer is in the message)."""


class KubeEmulator:
    """An :class:`ApiServerEmulator` on 127.0.0.1, served from a background thread with its own event loop."""

    def __init__(self, *, request_timeout: float = 2.0) -> None:
        self._request_timeout = request_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop_serving: asyncio.Event | None = None
        self._emulator: ApiServerEmulator | None = None
        self._clients: list[KubeClient] = []
        self.url = ""

    # Life cycle

    def start(self) -> KubeEmulator:
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise RuntimeError("the Kubernetes emulator did not start in 10 s")
        if self._failure is not None:
            raise RuntimeError("the Kubernetes emulator failed to start") from self._failure
        return self

    def close(self) -> None:
        for kube in self._clients:
            kube.close()
        self._clients.clear()
        if self._loop is not None and self._stop_serving is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop_serving.set)
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError("the Kubernetes emulator did not stop in 10 s")
        self._thread = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(); after a start, a failure here fails close()
            self._failure = error
            self._started.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self) -> None:
        self._stop_serving = asyncio.Event()
        emulator = ApiServerEmulator()
        emulator.resources.load_data(_bundled_resources())  # the built-ins of a recent K3s: pods, nodes...
        emulator.resources[GPUNODES] = GPUNODE_RESOURCE
        emulator.resources[GPUALLOCATIONS] = GPUALLOCATION_RESOURCE
        emulator.resources[GPUQUOTAS] = GPUQUOTA_RESOURCE
        async with emulator, kmock.Server(emulator) as server:
            self._emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop_serving.wait()
            await emulator.end_watches()

    # Clients and raw access

    def new_client(self, **options: Any) -> KubeClient:
        """A fresh ``KubeClient`` on this emulator (short timeouts), closed with the emulator."""
        options.setdefault("request_timeout", self._request_timeout)
        options.setdefault("connect_timeout", self._request_timeout)
        kube = KubeClient.from_url(self.url, **options)
        self._clients.append(kube)
        return kube

    @property
    def client(self) -> KubeClient:
        """The shared ``KubeClient`` of this emulator."""
        if not self._clients:
            self.new_client()
        return self._clients[0]

    def call(self, fn: Callable[[ApiServerEmulator], Awaitable[T]], timeout: float = 5.0) -> T:
        """Run ``await fn(emulator)`` on the emulator's loop and return its result (thread-safe)."""
        assert self._loop is not None and self._emulator is not None, "the emulator is not running"
        emulator = self._emulator
        return asyncio.run_coroutine_threadsafe(fn(emulator), self._loop).result(timeout)

    def _on_loop(self, fn: Callable[[ApiServerEmulator], T]) -> T:
        async def run(emulator: ApiServerEmulator) -> T:
            return fn(emulator)

        return self.call(run)

    def _send(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        async def send(emulator: ApiServerEmulator) -> Any:
            headers = {HARNESS_HEADER: "1"}
            data = None
            if body is not None:
                headers["Content-Type"] = content_type
                data = json.dumps(body)
            async with emulator.request(method, path, data=data, headers=headers) as response:
                answer = await response.json(content_type=None)
                if response.status >= 300:
                    raise HarnessError(f"{method} {path}: {response.status} {answer}")
                return answer

        return self.call(send)

    # Objects, through the emulator's own HTTP API (so that watches see every change)

    def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object; its ``status``, if any, is then written through the status subresource."""
        metadata = body.get("metadata", {})
        namespace = metadata.get("namespace")
        created: dict[str, Any] = self._send("POST", _path(resource, namespace), body)
        if "status" in body and "status" not in created:
            created = self.patch(
                resource,
                metadata["name"],
                {"status": body["status"]},
                namespace=namespace,
                subresource="status",
            )
        return created

    def patch(
        self,
        resource: str,
        name: str,
        patch: dict[str, Any] | list[dict[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A merge patch (a dict) or a JSON Patch (a list) of an object or of its ``subresource``."""
        kind = "application/merge-patch+json" if isinstance(patch, dict) else "application/json-patch+json"
        answer: dict[str, Any] = self._send(
            "PATCH", _path(resource, namespace, name, subresource), patch, kind
        )
        return answer

    def delete(self, resource: str, name: str, *, namespace: str | None = None) -> None:
        self._send("DELETE", _path(resource, namespace, name))

    def stored(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as the emulator holds it now, or None."""

        def read(emulator: ApiServerEmulator) -> dict[str, Any] | None:
            key = (kmock.resource(resource), namespace, name)
            if key not in emulator.objects or emulator.objects[key].deleted:
                return None
            return dict(emulator.objects[key].raw)

        return self._on_loop(read)

    def requests(self, *, action: str | None = None, resource: str | None = None) -> list[SeenRequest]:
        """The requests served so far (the harness's own included, flagged), oldest first."""

        def read(emulator: ApiServerEmulator) -> list[SeenRequest]:
            wanted = kmock.resource(resource) if resource is not None else None
            return [
                SeenRequest(
                    method=str(request.method.value),
                    path=request.url.path,
                    params=dict(request.params),
                    action=request.action.value.lower() if request.action is not None else None,
                    from_harness=is_from_harness(request),
                )
                for request in emulator  # a kmock handler iterates over the requests it served
                if (
                    action is None
                    or (request.action is not None and request.action.value.lower() == action.lower())
                )
                and (wanted is None or request.resource == wanted)
            ]

        return self._on_loop(read)

    # Faults

    def inject_watch_gone(self, resource: str = GPUNODES) -> None:
        """End the next watch of ``resource`` at once with an ERROR event of code 410 (Expired), once.

        A kmock DSL reaction on ``watch`` requests of that resource; its payload is a callable that
        answers a one-event stream the first time and ``NotImplemented`` after, which tells kmock to
        pass the request on to the emulator's own watch (and to retire the reaction).
        """
        fired = threading.Event()
        message = "too old resource version (injected by the test harness)"

        def once() -> object:
            if fired.is_set():
                return NotImplemented
            fired.set()
            return ({"type": "ERROR", "object": _status(410, "Expired", message)},)

        def install(emulator: ApiServerEmulator) -> None:
            emulator[kmock.action.WATCH, kmock.resource(resource)] << once

        self._on_loop(install)

    def inject_delay(self, seconds: float, *, action: str, resource: str) -> None:
        """From now on, hold every ``action`` request (``create``, ``fetch``...) on ``resource`` for
        ``seconds`` before serving it as usual: an API server slow to answer (overloaded, or waiting on
        etcd). A client that gives up meanwhile does not stop the write from landing afterwards."""

        async def slow() -> object:
            await asyncio.sleep(seconds)
            return NotImplemented  # then the emulator serves it

        def install(emulator: ApiServerEmulator) -> None:
            emulator[getattr(kmock.action, action.upper()), kmock.resource(resource)] << slow

        self._on_loop(install)

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[None]:
        """Meanwhile every request (but the harness's) answers 503 ServiceUnavailable."""
        self._on_loop(lambda emulator: setattr(emulator, "unavailable", True))
        try:
            yield
        finally:
            self._on_loop(lambda emulator: setattr(emulator, "unavailable", False))


@contextlib.contextmanager
def running_emulator(**options: Any) -> Iterator[KubeEmulator]:
    """A started :class:`KubeEmulator`, stopped (threads, loop, sockets) on the way out."""
    with KubeEmulator(**options) as kube:
        yield kube


def eventually(check: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"still false after {timeout} s: {check}")
        time.sleep(interval)
