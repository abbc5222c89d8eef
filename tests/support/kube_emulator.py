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

kmock's ``KubernetesEmulator`` keeps objects in memory and serves list, watch, get, create, merge/JSON
patch and delete. :class:`ApiServerEmulator` closes the gaps that matter for list-then-watch and for an
agent that owns a status, so that tests see what a real API server does:

* **resourceVersions.** kmock stores objects as sent and answers every list with
  ``resourceVersion: '...'``. Here every write stamps ``metadata.resourceVersion`` from one counter (as
  etcd's revision), creates also get ``uid`` and ``creationTimestamp``, and a list answers the
  revision of its snapshot.
* **Watches from a resourceVersion.** kmock replays every current object as ADDED on each watch and
  then streams forever. Here a watch from resourceVersion N replays the journal of events after N
  (DELETED included), a watch without one (or with ``0`` or a non-numeric one) starts with the
  current objects, ``timeoutSeconds`` ends the stream, and with ``allowWatchBookmarks=true`` a
  BOOKMARK carrying the current revision comes just before that end (as kube-apiserver does).
* **The status subresource**, for every resource that declares one (pods, nodes, GpuNodes,
  GpuAllocations): kmock merges any patch into the object whichever URL it came to. Here, as in
  kube-apiserver, a create or a patch of the object ignores ``status``, and a patch of ``/status``
  changes ``status`` only.
* **Faults**: :meth:`KubeEmulator.inject_watch_gone` (a one-shot kmock DSL reaction that ends the next
  watch with an ERROR event of code 410, as a server does for an expired resourceVersion) and
  :meth:`KubeEmulator.unavailable` (503 before any state changes: a kmock reaction would answer 503
  but kmock would still store a create it intercepted).

Still simplistic: label and field selectors, ``limit``/``continue`` (lists come in one page),
optimistic concurrency (a stale ``metadata.resourceVersion`` in a patch is not refused), strategic
merge patches (treated as merge patches), dry runs, and history compaction (no 410 unless injected).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import gzip
import importlib.resources
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import attrs
import kmock

from inventory.kube import KubeClient

T = TypeVar("T")

GPUNODES = "gpu.kgm.io/v1alpha1/gpunodes"
GPUALLOCATIONS = "gpu.kgm.io/v1alpha1/gpuallocations"
PODS = "v1/pods"
NODES = "v1/nodes"

#: Requests the harness itself sends carry this header: faults injected for the code under test spare them.
HARNESS_HEADER = "X-Kube-Emulator-Harness"

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


def _revision_of(obj: object) -> int | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return int(version) if isinstance(version, str) and version.isdigit() else None


def _from_harness(request: kmock.Request) -> bool:
    return any(key.lower() == HARNESS_HEADER.lower() for key in request.headers)


class _EmulatorStoppingError(Exception):
    """Put on the event buses when the emulator stops: every watch streaming from them ends."""


@attrs.define(kw_only=True)
class _JournalingBus(kmock.Bus[Any]):
    """kmock's per-resource event bus, also reporting each event as it is published (under kmock's lock)."""

    on_put: Callable[[Any], None]

    async def put(self, *items: Any) -> None:
        for item in items:
            self.on_put(item)
        await super().put(*items)


class _JournalingBuses(collections.defaultdict[kmock.resource, kmock.Bus[Any]]):
    def __init__(self, record: Callable[[kmock.resource, Any], None]) -> None:
        super().__init__()
        self._record = record

    def __missing__(self, key: kmock.resource) -> kmock.Bus[Any]:
        bus = self[key] = _JournalingBus(on_put=lambda event: self._record(key, event))
        return bus


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with resourceVersions, watches from a version, and status subresources."""

    #: When set, every request not sent by the harness answers 503 before touching any state.
    unavailable: bool = False

    _revision: int = attrs.field(default=0, init=False)  # handed out to writes, in arrival order
    _committed: int = attrs.field(default=0, init=False)  # the last revision actually stored
    _stopping: bool = attrs.field(default=False, init=False)
    _journal: dict[kmock.resource, list[tuple[int | None, dict[str, Any]]]] = attrs.field(
        factory=dict, init=False
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = _JournalingBuses(self._record)

    def _record(self, resource: kmock.resource, event: Any) -> None:
        if not isinstance(event, dict):  # _EmulatorStoppingError
            return
        revision = _revision_of(event.get("object"))
        if revision is not None:
            self._committed = max(self._committed, revision)
        self._journal.setdefault(resource, []).append((revision, event))

    def _has_status_subresource(self, resource: kmock.resource) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    async def _handle(self, request: kmock.Request) -> Any:
        if self._stopping or (self.unavailable and not _from_harness(request)):
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="unavailable (harness)"
            )
        if request.resource is not None:
            await self._prepare_write(request)
        # No await between here and kmock's taking its lock: revisions are stored in the order handed out.
        return await super()._handle(request)

    async def _prepare_write(self, request: kmock.Request) -> None:
        """Stamp a resourceVersion into the write, and apply the status subresource's rules to it."""
        resource, data = request.resource, request.data
        assert resource is not None
        status_rules = self._has_status_subresource(resource)
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            if status_rules:
                data.pop("status", None)
            self._revision += 1
            metadata = data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(self._revision)
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif request.action == kmock.action.UPDATE and request.name is not None:
            on_status = request.subresource == "status"
            self._revision += 1
            version = str(self._revision)
            if isinstance(data, dict):
                if status_rules:
                    kept = {"status"} if on_status else set(data) - {"status"}
                    for key in set(data) - kept:
                        del data[key]
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):  # a JSON Patch: the same rules, on the operations' paths
                if status_rules:
                    data[:] = [
                        op for op in data if str(op.get("path", "")).startswith("/status") == on_status
                    ]
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        elif request.action == kmock.action.DELETE and request.name is not None:
            # A deletion is a write too: the DELETED event carries a new resourceVersion.
            key = (resource, request.namespace, request.name)
            async with self._lock:
                if key in self.objects and not self.objects[key].deleted:
                    self._revision += 1
                    self.objects[key].patch({"metadata": {"resourceVersion": str(self._revision)}})

    async def end_watches(self) -> None:
        """End every open watch now and refuse new requests (a server shutting down); otherwise stopping
        the server waits for the watches to time out."""
        self._stopping = True
        for bus in list(self._buses.values()):
            await bus.put(_EmulatorStoppingError())  # a bus raises the exceptions it carries in its readers

    async def _serve_list(self, request: kmock.Request) -> Any:
        listing = await super()._serve_list(request)
        # No await since kmock read the objects under its lock: the revision matches the snapshot.
        listing["metadata"]["resourceVersion"] = str(self._committed)
        return listing

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now: a watch with nothing to say yet is still a watch
        assert request.resource is not None
        resource = request.resource
        params = request.params
        since_text = params.get("resourceVersion", "")
        since = int(since_text) if since_text.isdigit() and int(since_text) > 0 else None
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None

        def wanted(event: dict[str, Any]) -> bool:
            metadata = event.get("object", {}).get("metadata", {})
            return (request.namespace is None or metadata.get("namespace") == request.namespace) and (
                request.name is None or metadata.get("name") == request.name
            )

        bus = self._buses[resource]
        async with self._lock:  # writers publish under this lock: nothing falls between replay and stream
            marker = await bus.mark()
            if since is None:
                replay = [
                    {"type": "ADDED", "object": obj.raw}
                    for (res, _, _), obj in self.objects.items()
                    if res == resource and not obj.deleted
                ]
            else:
                replay = [
                    event for rev, event in self._journal.get(resource, []) if rev is not None and rev > since
                ]
        stream = bus.stream(since=marker)
        try:
            for event in replay:
                if wanted(event):
                    yield event
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(anext(stream), remaining)
                except TimeoutError:
                    break
                except _EmulatorStoppingError:
                    return
                if wanted(event):
                    yield event
            if params.get("allowWatchBookmarks") == "true":
                info = self.resources[resource] if resource in self.resources else kmock.ResourceInfo()
                api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
                metadata = {"resourceVersion": str(self._committed)}
                yield {
                    "type": "BOOKMARK",
                    "object": {"kind": info.kind, "apiVersion": api_version, "metadata": metadata},
                }
        finally:
            await stream.aclose()
            await bus.unmark(marker)


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
                    from_harness=_from_harness(request),
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
