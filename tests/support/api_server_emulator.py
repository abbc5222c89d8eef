"""The API server behind the test harness: kmock's ``KubernetesEmulator`` made to behave like
kube-apiserver where list-then-watch and an agent that owns a status need it.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves list, watch, get, create, merge/JSON
patch and delete. :class:`ApiServerEmulator` closes the gaps that matter, so that tests see what a real
API server does:

* **resourceVersions.** kmock stores objects as sent and answers every list with
  ``resourceVersion: '...'``. Here every write stamps ``metadata.resourceVersion`` from one counter (as
  etcd's revision), creates also get ``uid`` and ``creationTimestamp``, and a list answers the
  revision of its snapshot.
* **Watches from a resourceVersion.** kmock replays every current object as ADDED on each watch and
  then streams forever. Here a watch from resourceVersion N replays the journal of events after N
  (DELETED included), a watch from a revision the server has not reached ends with an ERROR event of
  code 504 "Too large resource version", a watch without one (or with ``0`` or a non-numeric one)
  starts with the current objects, ``timeoutSeconds`` ends the stream, and with ``allowWatchBookmarks=true`` a
  BOOKMARK carrying the current revision comes just before that end (as kube-apiserver does).
* **The status subresource**, for every resource that declares one (pods, nodes, GpuNodes,
  GpuAllocations): kmock merges any patch into the object whichever URL it came to. Here, as in
  kube-apiserver, a create or a patch of the object ignores ``status``, and a patch of ``/status``
  changes ``status`` only.
* **Reviews are answered, never stored**: a create of TokenReview, SubjectAccessReview and the like
  goes to the reactions only (``tests/support/access_reviews.py`` answers them from a table the test
  controls); kmock would keep each one, and refuse the next, nameless too, with 409.
* **Unavailability**: while ``unavailable`` is set, every request not sent by the harness (which marks
  its own with ``HARNESS_HEADER``) answers 503 before any state changes (a kmock reaction would answer
  503 but kmock would still store a create it intercepted).

Still simplistic: label and field selectors, ``limit``/``continue`` (lists come in one page),
optimistic concurrency (a stale ``metadata.resourceVersion`` in a patch is not refused), strategic
merge patches (treated as merge patches), dry runs, and history compaction (no 410 unless injected).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.web
import attrs
import kmock

__all__ = ["HARNESS_HEADER", "ApiServerEmulator", "is_from_harness"]

#: Requests the harness itself sends carry this header: faults injected for the code under test spare them.
HARNESS_HEADER = "X-Kube-Emulator-Harness"


#: Kinds kube-apiserver answers on create and never stores.
_REVIEWS = frozenset({
    "tokenreviews", "subjectaccessreviews", "localsubjectaccessreviews", "selfsubjectaccessreviews",
    "selfsubjectrulesreviews", "selfsubjectreviews",
})  # fmt: skip


def _revision_of(obj: object) -> int | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return int(version) if isinstance(version, str) and version.isdigit() else None


def is_from_harness(request: kmock.Request) -> bool:
    return any(key.lower() == HARNESS_HEADER.lower() for key in request.headers)


def _too_large(asked: int, current: int) -> dict[str, Any]:
    """kube-apiserver's NewTooLargeResourceVersionError: a Timeout (504) with its own cause."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Too large resource version: {asked}, current: {current}",
        "reason": "Timeout",
        "details": {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
        "code": 504,
    }


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
        if self._stopping or (self.unavailable and not is_from_harness(request)):
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="unavailable (harness)"
            )
        if request.resource is not None and request.resource.plural in _REVIEWS:
            return await kmock.RawHandler._handle(self, request)  # the reactions only: nothing stored
        if request.resource is not None and request.method == kmock.method.PUT and request.name is not None:
            return await self._replace(request)
        if request.resource is not None:
            await self._prepare_write(request)
        # No await between here and kmock's taking its lock: revisions are stored in the order handed out.
        return await super()._handle(request)

    async def _replace(self, request: kmock.Request) -> Any:
        """PUT of a named object (kmock has none): kube-apiserver's optimistic concurrency, 409 when the
        body's resourceVersion is not the stored one (leader election's lease renewals rely on it)."""
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        data = request.data if isinstance(request.data, dict) else {}
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesError(
                    status=404, reason="NotFound", message=f"{request.name} not found"
                )
            stored = self.objects[key].raw
            asked = (data.get("metadata") or {}).get("resourceVersion")
            if asked and asked != (stored.get("metadata") or {}).get("resourceVersion"):
                raise kmock.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message="the object has been modified; apply your changes to the latest version",
                )
            self._revision += 1
            metadata = {**(stored.get("metadata") or {}), **(data.get("metadata") or {})}
            metadata["resourceVersion"] = str(self._revision)
            self.objects[key].patch({**data, "metadata": metadata})
            raw = self.objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

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
        if since is not None and since > self._committed:
            # A revision this server has not reached (another server is ahead, or etcd was restored from
            # a backup): kube-apiserver waits up to 3 s for it, then ends the watch with this Status.
            yield {"type": "ERROR", "object": _too_large(since, self._committed)}
            return
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
