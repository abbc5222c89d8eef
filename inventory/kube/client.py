"""The Kubernetes adapter: GpuNodes, pods and nodes through the official client, as plain dicts.

With ``transport.py``, the only code that touches ``kubernetes``. Every call asks for the raw response
(``_preload_content=False``) and decodes the JSON itself: the objects keep Kubernetes' camelCase wire
format (what ``inventory.domain.gpunode`` and the cache read), and no model classes are built only to be
turned back into dicts. Library errors (``ApiException``, urllib3's and socket errors) become one small
tree (``inventory/kube/errors.py``), in one place (``transport.py``'s ``_translated``), chained
``from`` the original:

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

from collections.abc import Iterator, Mapping
from typing import Any, Final

from inventory.domain.gpunode import PLURAL, VERSION
from inventory.domain.labels import GROUP
from inventory.kube.errors import KubeNotFoundError
from inventory.kube.events import Events
from inventory.kube.quotas import Quotas
from inventory.kube.reviews import AccessReviews
from inventory.kube.transport import Listing, Transport, WatchEvent

_GVP: Final = (GROUP, VERSION, PLURAL)
GPUALLOCATIONS: Final = "gpuallocations"


class KubeClient(AccessReviews, Events, Quotas, Transport):
    """GpuNodes, pods, nodes, ConfigMaps, Leases through the Kubernetes API; synchronous, thread-safe."""

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
