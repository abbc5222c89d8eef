"""Quota calls: GpuQuotas (ours, namespaced) and ResourceQuotas (their GPU lines), watched in every
namespace, and the GpuQuota's used figures written to its status subresource (the leader only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from inventory.domain.gpunode import VERSION
from inventory.domain.labels import GROUP
from inventory.kube.transport import Listing, Transport, WatchEvent

GPUQUOTAS: Final = "gpuquotas"


class Quotas(Transport):
    """GpuQuotas and ResourceQuotas of every namespace."""

    def list_gpuquotas(self) -> Listing:
        return self._list(
            "list gpuquotas", self._custom.list_cluster_custom_object, GROUP, VERSION, GPUQUOTAS
        )

    def watch_gpuquotas(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch gpuquotas",
            self._custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            GPUQUOTAS,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )

    def update_gpuquota_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into a GpuQuota's status (``/status`` subresource); :class:`KubeNotFoundError`
        when the object is gone. A merge patch: the leader writes every key it owns each time."""
        return self._call(
            f"update gpuquota {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            GPUQUOTAS,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    def list_resourcequotas(self) -> Listing:
        return self._list("list resourcequotas", self._core.list_resource_quota_for_all_namespaces)

    def watch_resourcequotas(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]:
        return self._watch(
            "watch resourcequotas",
            self._core.list_resource_quota_for_all_namespaces,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )
