"""The transport under the Kubernetes adapter: the official client's ApiClient, three shapes of call (one
object, all pages of a list, a watch's events) and the one place where library errors become
:class:`~inventory.kube.errors.KubeError` (:func:`_translated`).

Resource calls live in mixins of :class:`Transport` (``client.py``: GpuNodes, pods, nodes, ConfigMaps,
Leases; one module per further concern), so that the adapter grows by modules, not by one long file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Self

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from inventory.kube.errors import (
    KubeError,
    KubeUnavailableError,
    error_for_status,
    status_message,
)

_EVENT_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


@dataclass(frozen=True, slots=True)
class Listing:
    """A complete list of objects and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch: ``ADDED``, ``MODIFIED``, ``DELETED`` or ``BOOKMARK`` and the object as a dict.

    ``ERROR`` events never reach callers: the watch raises the matching :class:`KubeError` instead.
    """

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        """The object's ``metadata.resourceVersion``, or "" when the server sent none."""
        metadata = self.object.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        return version if isinstance(version, str) else ""


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn the client's and the transport's exceptions into :class:`KubeError` (the only place that does)."""
    try:
        yield
    except ApiException as error:
        status = error.status if isinstance(error.status, int) and error.status > 0 else None
        message = status_message(error.body, str(error.reason or "no reason given"))
        raise error_for_status(status, f"{what}: {message}", error.body) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        # MaxRetryError (refused), ReadTimeoutError, ProtocolError (reset mid-stream), SSL errors...
        # Their text names host and port only; credentials travel in headers and are never in it.
        raise KubeUnavailableError(f"{what}: {type(error).__name__}: {error}") from error
    except orjson.JSONDecodeError as error:
        raise KubeError(f"{what}: the answer is not JSON: {error}") from error


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    with _translated(what):
        body = orjson.loads(data)
    if not isinstance(body, dict):
        raise KubeError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _lines(response: Any) -> Iterator[bytes]:
    """Non-empty lines of a chunked watch stream, as each chunk arrives."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


def _event(line: bytes, what: str) -> WatchEvent:
    raw = _json_object(line, what)
    kind, obj = raw.get("type"), raw.get("object")
    if kind == "ERROR":
        # The server ends a watch with a Status object, e.g. code 410 "too old resource version".
        code = obj.get("code") if isinstance(obj, Mapping) else None
        message = f"{what}: {status_message(obj, 'ERROR')}"
        raise error_for_status(code if isinstance(code, int) else None, message, obj)
    if kind not in _EVENT_TYPES or not isinstance(obj, dict):
        raise KubeError(f"{what}: unexpected watch event of type {kind!r}")
    return WatchEvent(type=kind, object=obj)


class Transport:
    """The connection to the API server and the shapes of call; synchronous, thread-safe (urllib3)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        page_size: int = 500,
    ) -> None:
        """``request_timeout``: seconds to wait for an answer (a watch waits its own timeout plus this).

        ``page_size``: items per list request (``limit``); a list follows ``continue`` to the end.
        """
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        # Calls with a deadline of their own (binding a pod within kube-scheduler's httpTimeout) use a
        # pool that never retries: urllib3 retries a connect error, or a GET's read timeout, up to 3
        # times, each with the whole timeout again.
        once = copy.deepcopy(api_client.configuration)
        once.retries = False
        self._api_once = client.ApiClient(once)
        self._core_once = client.CoreV1Api(self._api_once)
        self._custom = client.CustomObjectsApi(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._page_size = page_size

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **options: Any) -> Self:
        """In a pod (``KUBERNETES_SERVICE_HOST`` set): the service account; elsewhere: the kubeconfig
        (``$KUBECONFIG``, else ``~/.kube/config``). ``environ`` is the process environment as the
        settings read it (never ``os.environ`` here); ``options`` go to the constructor (timeouts)."""
        configuration = client.Configuration()
        in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                # $KUBECONFIG read now, not when the client was imported (its default is fixed at import).
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=environ.get("KUBECONFIG") or None, client_configuration=configuration
                )
        except (ConfigException, OSError) as error:
            where = "in-cluster service account" if in_cluster else "kubeconfig"
            raise KubeError(f"no usable Kubernetes configuration ({where}): {error}") from error
        return cls(client.ApiClient(configuration), **options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A client for a plain-HTTP API server with no authentication (a test server, ``kubectl proxy``)."""
        return cls(client.ApiClient(client.Configuration(host=url.rstrip("/"))), **options)

    def close(self) -> None:
        """Close the connection pools."""
        self._api.close()  # type: ignore[no-untyped-call]
        self._api_once.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The three shapes of call

    def _call(
        self, what: str, method: Callable[..., Any], *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One request, one JSON object back; within ``timeout_s`` in all where given."""
        timeout: float | tuple[float, float] = (self._connect_timeout, self._request_timeout)
        if timeout_s is not None:
            if timeout_s <= 0:
                raise KubeUnavailableError(f"{what}: no time left to ask")
            timeout = timeout_s  # the client makes one number urllib3's total: connect and read together
        with _translated(what):
            response = method(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
            try:
                data: bytes = response.data
            finally:
                response.release_conn()
        return _json_object(data, what)

    def _list(self, what: str, method: Callable[..., Any], *args: Any) -> Listing:
        """All pages of a list, and the resourceVersion of the snapshot they come from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            body = self._call(what, method, *args, limit=self._page_size, _continue=token)
            items.extend(item for item in body.get("items") or () if isinstance(item, dict))
            metadata = body.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                version = metadata.get("resourceVersion")
                return Listing(items=items, resource_version=version if isinstance(version, str) else "")

    def _watch(
        self, what: str, method: Callable[..., Any], *args: Any, resource_version: str, timeout_seconds: int
    ) -> Iterator[WatchEvent]:
        """Events from ``resource_version`` on, until the server ends the watch after ``timeout_seconds``.

        The stream is read line by line here rather than through ``kubernetes.watch.Watch``: that class
        builds model objects (or needs ``deserialize=False``), retries a 410 on its own once, re-issues
        the request in a loop, and raises a bare ``ApiException`` from inside iteration; the caller (the
        Reflector) wants every event raw and every end of the stream, 410 included, handed to it.
        """
        with _translated(what):
            response = method(
                *args,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version or None,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                # The server ends the watch after timeout_seconds; the read timeout only catches a
                # connection that went silent (a dead peer), so it waits a little longer than that.
                _request_timeout=(self._connect_timeout, timeout_seconds + self._request_timeout),
            )
        try:
            lines = _lines(response)
            while True:
                with _translated(what):
                    line = next(lines, None)
                if line is None:
                    return
                yield _event(line, what)
        finally:
            # Closing (not only releasing) the connection: a watch left half-read must not go back to the
            # pool, where the next request would read the rest of its stream.
            response.close()
            response.release_conn()
