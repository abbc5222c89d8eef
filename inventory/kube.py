"""The Kubernetes adapter: GpuNodes, pods and nodes through the official client, as plain dicts.

The only module that imports ``kubernetes``. Every call asks for the raw response
(``_preload_content=False``) and decodes the JSON itself: the objects keep Kubernetes' camelCase wire
format (what ``inventory.domain.gpunode`` and the cache read), and no model classes are built only to be
turned back into dicts. Library errors (``ApiException``, urllib3's and socket errors) become one small
tree (``inventory/kube_errors.py``), in one place (:func:`_translated`), chained ``from`` the original:

    KubeError                 anything else (status 401/403/422..., a malformed answer)
    ├── KubeNotFoundError     404
    ├── KubeConflictError     409: exists already, or a stale resourceVersion
    ├── KubeGoneError         410: the resourceVersion is too old (list again, then watch)
    └── KubeUnavailableError  connection refused or reset, timeouts, 429 and 5xx: worth a retry
        └── KubeVersionTooLargeError  504 "Too large resource version": this server has not seen
                                      the version asked for (list again, then watch)

Resource versions are opaque strings here, as the API conventions ask: never parsed, never compared
(test servers answer ``'...'``, and that is fine). Nothing here logs; tokens and the Authorization
header stay inside the client's configuration.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from inventory.domain.gpunode import PLURAL, VERSION
from inventory.domain.labels import GROUP
from inventory.kube_errors import (
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
    KubeVersionTooLargeError,
    error_for_status,
    status_message,
)

__all__ = [
    "GPUALLOCATIONS",
    "KubeClient",
    "KubeConflictError",
    "KubeError",
    "KubeGoneError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "KubeVersionTooLargeError",
    "Listing",
    "WatchEvent",
    "error_for_status",
]

_GVP: Final = (GROUP, VERSION, PLURAL)
GPUALLOCATIONS: Final = "gpuallocations"

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


class KubeClient:
    """GpuNodes, pods, nodes, ConfigMaps through the Kubernetes API; synchronous, thread-safe (urllib3)."""

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
    def from_environment(cls, environ: Mapping[str, str], **options: Any) -> KubeClient:
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
    def from_url(cls, url: str, **options: Any) -> KubeClient:
        """A client for a plain-HTTP API server with no authentication (a test server, ``kubectl proxy``)."""
        return cls(client.ApiClient(client.Configuration(host=url.rstrip("/"))), **options)

    def close(self) -> None:
        """Close the connection pools."""
        self._api.close()  # type: ignore[no-untyped-call]
        self._api_once.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # GpuNodes (cluster-scoped custom objects)

    def get_gpunode(self, name: str) -> dict[str, Any] | None:
        """The GpuNode called ``name``, or None when there is none."""
        try:
            return self._call(f"get gpunode {name}", self._custom.get_cluster_custom_object, *_GVP, name)
        except KubeNotFoundError:
            return None

    def create_gpunode(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a GpuNode; :class:`KubeConflictError` when it exists. The server ignores ``status`` here."""
        return self._call("create gpunode", self._custom.create_cluster_custom_object, *_GVP, body)

    def update_gpunode_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole status of a GpuNode through its ``/status`` subresource.

        A JSON Patch ``add /status`` (which replaces an existing member) rather than a merge patch: the
        agent owns the status and always writes all of it, and with a merge patch a key it stops
        writing (``allocations`` when the kubelet API goes away) would stay forever unless sent as null.
        """
        patch = [{"op": "add", "path": "/status", "value": status}]
        return self._call(
            f"update gpunode {name} status",
            self._custom.patch_cluster_custom_object_status,
            *_GVP,
            name,
            patch,
            _content_type="application/json-patch+json",
        )

    def list_gpunodes(self) -> Listing:
        return self._list("list gpunodes", self._custom.list_cluster_custom_object, *_GVP)

    def watch_gpunodes(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch gpunodes",
            self._custom.list_cluster_custom_object,
            *_GVP,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )

    # GpuAllocations (namespaced custom objects: reservations made through Kubernetes)

    def list_gpuallocations(self) -> Listing:
        """Every GpuAllocation of every namespace (the cluster-wide list of a namespaced resource)."""
        return self._list(
            "list gpuallocations", self._custom.list_cluster_custom_object, GROUP, VERSION, GPUALLOCATIONS
        )

    def watch_gpuallocations(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch gpuallocations",
            self._custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            GPUALLOCATIONS,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )

    def update_gpuallocation_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status``'s keys into a GpuAllocation's status through its ``/status`` subresource.

        A JSON merge patch, unlike the GpuNode's whole-status replacement: the controller writes one
        decision at a time (``Allocated`` with its fields, or ``Failed`` with a message) and keys it
        does not send keep their values. :class:`KubeNotFoundError` when the object is gone.
        """
        return self._call(
            f"update gpuallocation {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            GPUALLOCATIONS,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    # Pods (all namespaces) and nodes

    def list_pods(self) -> Listing:
        return self._list("list pods", self._core.list_pod_for_all_namespaces)

    def watch_pods(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch pods",
            self._core.list_pod_for_all_namespaces,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )

    def list_nodes(self) -> Listing:
        return self._list("list nodes", self._core.list_node)

    def watch_nodes(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch nodes",
            self._core.list_node,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )

    def patch_node_metadata(
        self,
        name: str,
        *,
        labels: Mapping[str, str | None],
        annotations: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """Set (or, with None, remove) labels and annotations of a node, others untouched: a JSON merge
        patch of ``metadata`` only. :class:`KubeNotFoundError` when the node is gone."""
        metadata: dict[str, Any] = {"labels": dict(labels)}
        if annotations:
            metadata["annotations"] = dict(annotations)
        return self._call(
            f"patch node {name} metadata",
            self._core.patch_node,
            name,
            {"metadata": metadata},
            _content_type="application/merge-patch+json",
        )

    # ConfigMaps (the MIG manager's config)

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                f"get configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace
            )
        except KubeNotFoundError:
            return None

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """:class:`KubeConflictError` when it exists already."""
        return self._call(
            f"create configmap in {namespace}", self._core.create_namespaced_config_map, namespace, body
        )

    def update_configmap_data(
        self, namespace: str, name: str, data: Mapping[str, str], *, resource_version: str
    ) -> dict[str, Any]:
        """Set keys of a ConfigMap's ``data`` if nobody wrote it since ``resource_version`` (a merge
        patch that carries it: the API server answers 409, :class:`KubeConflictError`, otherwise)."""
        patch = {"metadata": {"resourceVersion": resource_version}, "data": dict(data)}
        return self._call(
            f"update configmap {namespace}/{name}",
            self._core.patch_namespaced_config_map,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    # Pods: one, and binding one to a node

    def get_pod(self, namespace: str, name: str, timeout_s: float | None = None) -> dict[str, Any] | None:
        """``timeout_s``: answer within that many seconds in all (:class:`KubeUnavailableError` if not)."""
        api = self._core if timeout_s is None else self._core_once
        try:
            return self._call(
                f"get pod {namespace}/{name}", api.read_namespaced_pod, name, namespace, timeout_s=timeout_s
            )
        except KubeNotFoundError:
            return None

    def patch_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        """Set (None: remove) a pod's labels, others untouched: the leader marks its own pod."""
        body, merge = {"metadata": {"labels": dict(labels)}}, "application/merge-patch+json"
        patch = self._core.patch_namespaced_pod
        return self._call(f"patch pod {namespace}/{name}", patch, name, namespace, body, _content_type=merge)

    def create_binding(
        self, *, namespace: str, name: str, uid: str, node: str, timeout_s: float | None = None
    ) -> None:
        """Bind a pod to a node, as kube-scheduler's default binder does.

        ``metadata.uid`` is a precondition the API server checks: a pod deleted and recreated under
        the same name between the scheduling decision and this call is not bound by mistake.
        ``timeout_s``: give up after that many seconds in all, connecting included, with no retry
        (:class:`KubeUnavailableError`; the binding may still have been written).
        """
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        api = self._core if timeout_s is None else self._core_once
        what = f"bind pod {namespace}/{name} to {node}"
        self._call(what, api.create_namespaced_binding, namespace, body, timeout_s=timeout_s)

    # Leases (coordination.k8s.io/v1): one writer among replicas

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                f"get lease {namespace}/{name}", self._coordination.read_namespaced_lease, name, namespace
            )
        except KubeNotFoundError:
            return None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """:class:`KubeConflictError` when another replica created it first."""
        return self._call(
            f"create lease in {namespace}", self._coordination.create_namespaced_lease, namespace, body
        )

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A PUT carrying ``metadata.resourceVersion``: :class:`KubeConflictError` if someone else
        wrote the lease since we read it (optimistic concurrency: exactly one replica wins)."""
        return self._call(
            f"replace lease {namespace}/{name}",
            self._coordination.replace_namespaced_lease,
            name,
            namespace,
            body,
        )

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
