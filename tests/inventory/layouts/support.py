"""Nodes of H100s laid out as a test says, as their agent would publish them, and an in-memory store
for the MIG manager's ConfigMap and the node labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.gpunode import build_status, new_gpunode
from inventory.domain.health import GpuHealth
from inventory.domain.mig_layout import place_instances
from inventory.domain.model import GpuDevice, NodeInventory, NodeName
from inventory.domain.readings import DeviceAssignment
from inventory.kube import KubeConflictError, KubeError
from inventory.node.fake_gpu import FakeGpuSource, fake_uuid

CATALOGUE = builtin_catalogue()
H100 = CATALOGUE.model("H100-80GB")
THREE_G = "nvidia.com/mig-3g.40gb"
ONE_G = "nvidia.com/mig-1g.10gb"


def h100_node(name: str, *layouts: Sequence[str] | None) -> NodeInventory:
    """A node of H100s: None is a whole GPU, a list of profile names a MIG layout."""
    gpus = tuple(
        GpuDevice(index=i, model=H100)
        if layout is None
        else GpuDevice(
            index=i, model=H100, mig_enabled=True, mig_instances=place_instances(H100, list(layout))
        )
        for i, layout in enumerate(layouts)
    )
    return NodeInventory(name=NodeName(name), gpus=gpus)


def mig_uuid(node: str, gpu: int, instance: int) -> str:
    """The UUID of a node's GPU ``gpu``'s ``instance``-th MIG device (by start), as the fake reports it."""
    return str(fake_uuid(node, gpu, instance + 1))


def gpunode(
    node: NodeInventory, *, generation: int = 1, assignments: Sequence[DeviceAssignment] | None = ()
) -> dict[str, Any]:
    """The GpuNode its agent publishes (``assignments``: the kubelet's; None: no PodResources API)."""
    host = FakeGpuSource.from_node(node).read()
    status = build_status(
        node_name=node.name,
        host=host,
        health={gpu.uuid: GpuHealth(healthy=True) for gpu in host.gpus},
        assignments=assignments,
        catalogue=CATALOGUE,
        heartbeat_time=datetime.now(UTC),
        generation=generation,
        agent_version="test",
    )
    return {**new_gpunode(node.name), "status": status}


def gpu_pod(
    name: str,
    resources: Mapping[str, int],
    *,
    node: str | None = None,
    unschedulable: bool = False,
    phase: str | None = None,
) -> dict[str, Any]:
    limits = {resource: str(count) for resource, count in resources.items()}
    status: dict[str, Any] = {"phase": phase or ("Running" if node else "Pending")}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i", "resources": {"limits": limits}}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": spec,
        "status": status,
    }


class MemoryMigStore:
    """The ConfigMap and node label calls of ``inventory.kube.KubeClient``, in memory; ``fail`` makes
    every call raise that error."""

    def __init__(self) -> None:
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.node_labels: dict[str, dict[str, str]] = {}
        self.node_annotations: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.fail: KubeError | None = None
        self._version = 0

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check("get_configmap")
        return self.configmaps.get((namespace, name))

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check("create_configmap")
        key = (namespace, body["metadata"]["name"])
        if key in self.configmaps:
            raise KubeConflictError("exists", status=409)
        self._version += 1
        self.configmaps[key] = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": str(self._version)},
        }
        return self.configmaps[key]

    def update_configmap_data(
        self, namespace: str, name: str, data: Mapping[str, str], *, resource_version: str
    ) -> dict[str, Any]:
        self._check("update_configmap_data")
        found = self.configmaps[(namespace, name)]
        if found["metadata"]["resourceVersion"] != resource_version:
            raise KubeConflictError("changed", status=409)
        self._version += 1
        found["data"] = {**found.get("data", {}), **data}
        found["metadata"]["resourceVersion"] = str(self._version)
        return found

    def patch_node_metadata(
        self,
        name: str,
        *,
        labels: Mapping[str, str | None],
        annotations: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        self._check("patch_node_metadata")
        for stored, given in ((self.node_labels, labels), (self.node_annotations, annotations or {})):
            current = stored.setdefault(name, {})
            for key, value in given.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
        return self.node_object(name)

    def node_object(self, name: str) -> dict[str, Any]:
        metadata = {
            "name": name,
            "labels": dict(self.node_labels.get(name, {})),
            "annotations": dict(self.node_annotations.get(name, {})),
        }
        return {"metadata": metadata}
