"""The Kubernetes adapter through the official client against kmock's emulator on loopback: GpuNodes
created, read, their status replaced, listed (page by page) and watched; pods and nodes listed and
watched."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from inventory.kube import (
    KubeClient,
    KubeConflictError,
    KubeNotFoundError,
    WatchEvent,
)
from tests.inventory.kube_objects import gpunode, names, pod, take
from tests.support.kube_emulator import (
    GPUNODES,
    NODES,
    PODS,
    KubeEmulator,
    eventually,
)

# GpuNodes


def test_a_gpunode_is_created_read_back_and_its_status_replaced_through_the_subresource(
    kube_emulator: KubeEmulator,
) -> None:
    kube = kube_emulator.client
    created = kube.create_gpunode(gpunode("n1", driverVersion="ignored on create"))
    assert created["metadata"]["name"] == "n1"
    assert "status" not in created  # the status subresource: a create ignores it, as the API server does

    status = {
        "driverVersion": "550.54.15",
        "heartbeatGeneration": 1,
        "gpus": [{"index": 0, "uuid": "GPU-1", "memoryTotalMiB": 81559, "migEnabled": False}],
        "allocations": [{"namespace": "ml", "pod": "p", "container": "c", "deviceIds": ["GPU-1"]}],
    }
    updated = kube.update_gpunode_status("n1", status)
    assert updated["status"] == status  # camelCase as on the wire: raw JSON, no client models
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    # The whole status is replaced: what the agent stopped writing (allocations) does not linger.
    later = {"driverVersion": "550.54.15", "heartbeatGeneration": 2, "gpus": status["gpus"]}
    assert kube.update_gpunode_status("n1", later)["status"] == later
    fetched = kube.get_gpunode("n1")
    assert fetched is not None
    assert (fetched["spec"], fetched["status"]) == ({"nodeName": "n1"}, later)


def test_a_missing_gpunode_is_none_to_get_and_not_found_to_update(kube_emulator: KubeEmulator) -> None:
    assert kube_emulator.client.get_gpunode("ghost") is None
    with pytest.raises(KubeNotFoundError) as caught:
        kube_emulator.client.update_gpunode_status("ghost", {"heartbeatGeneration": 1})
    assert caught.value.status == 404
    assert isinstance(caught.value.__cause__, ApiException)


def test_creating_a_gpunode_twice_is_a_conflict(kube_emulator: KubeEmulator) -> None:
    kube_emulator.client.create_gpunode(gpunode("n1"))
    with pytest.raises(KubeConflictError) as caught:
        kube_emulator.client.create_gpunode(gpunode("n1"))
    assert caught.value.status == 409
    assert isinstance(caught.value.__cause__, ApiException)


def test_the_gpunode_list_holds_every_object_and_a_version_to_watch_from(kube_emulator: KubeEmulator) -> None:
    kube = kube_emulator.client
    assert kube.list_gpunodes().items == []
    for name in ("n1", "n2", "n3"):
        kube.create_gpunode(gpunode(name))
    listing = kube.list_gpunodes()
    assert names(listing) == ["n1", "n2", "n3"]
    assert isinstance(listing.resource_version, str) and listing.resource_version


def test_the_list_follows_continue_tokens_to_the_last_page() -> None:
    # The emulator answers every list in one page, so the pages come from a stand-in for the API call.
    pages = iter(
        [
            {"metadata": {"continue": "p2", "resourceVersion": "5"}, "items": [{"metadata": {"name": "a"}}]},
            {"metadata": {"resourceVersion": "5"}, "items": [{"metadata": {"name": "b"}}]},
        ]
    )
    seen: list[Any] = []

    class Response:
        def __init__(self, body: dict[str, Any]) -> None:
            self.data = json.dumps(body).encode()

        def release_conn(self) -> None:
            pass

    def fake_list(*args: Any, **kwargs: Any) -> Response:
        seen.append(kwargs.get("_continue"))
        return Response(next(pages))

    kube = KubeClient.from_url("http://127.0.0.1:9")
    try:
        listing = kube._list("list things", fake_list)
    finally:
        kube.close()
    assert (names(listing), listing.resource_version, seen) == (["a", "b"], "5", [None, "p2"])


def test_a_watch_from_the_list_version_sees_added_modified_and_deleted(kube_emulator: KubeEmulator) -> None:
    kube = kube_emulator.client
    kube.create_gpunode(gpunode("old"))
    version = kube.list_gpunodes().resource_version
    kube.create_gpunode(gpunode("n1"))
    kube.update_gpunode_status("n1", {"heartbeatGeneration": 7})
    kube_emulator.delete(GPUNODES, "n1")

    events = take(kube.watch_gpunodes(version, 5), 3)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "n1"),
        ("MODIFIED", "n1"),
        ("DELETED", "n1"),
    ]
    assert events[1].object["status"] == {"heartbeatGeneration": 7}
    assert all(e.resource_version for e in events)


def test_a_watch_streams_changes_as_they_happen_and_ends_with_a_bookmark(kube_emulator: KubeEmulator) -> None:
    kube = kube_emulator.client
    version = kube.list_gpunodes().resource_version
    received: list[WatchEvent] = []
    watcher = threading.Thread(target=lambda: received.extend(kube.watch_gpunodes(version, 1)))
    watcher.start()
    eventually(lambda: kube_emulator.requests(action="watch"))
    kube_emulator.create(GPUNODES, gpunode("n1"))
    watcher.join(timeout=5)
    assert [e.type for e in received] == ["ADDED", "BOOKMARK"]  # the server's timeoutSeconds ended it
    assert received[1].resource_version == received[0].resource_version
    (request,) = kube_emulator.requests(action="watch")
    assert request.params == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "resourceVersion": version,
        "timeoutSeconds": "1",
    }


# Pods and nodes


def test_pods_of_every_namespace_are_listed_and_watched(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(PODS, pod("p1", "ml"))
    kube_emulator.create(PODS, pod("p2", "research"))
    listing = kube_emulator.client.list_pods()
    assert names(listing) == ["p1", "p2"]
    assert {item["status"]["phase"] for item in listing.items} == {"Running"}

    kube_emulator.create(PODS, pod("p3", "ml"))
    kube_emulator.patch(PODS, "p1", {"status": {"phase": "Succeeded"}}, namespace="ml", subresource="status")
    events = take(kube_emulator.client.watch_pods(listing.resource_version, 5), 3)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "p3"),  # created with its status written next, through /status:
        ("MODIFIED", "p3"),
        ("MODIFIED", "p1"),
    ]
    assert events[2].object["status"]["phase"] == "Succeeded"


def test_nodes_are_listed_and_watched(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(
        NODES, {"metadata": {"name": "n1", "labels": {"nvidia.com/mig.config": "all-1g.10gb"}}}
    )
    listing = kube_emulator.client.list_nodes()
    assert names(listing) == ["n1"]
    kube_emulator.patch(NODES, "n1", {"metadata": {"labels": {"nvidia.com/mig.config.state": "success"}}})
    (modified,) = take(kube_emulator.client.watch_nodes(listing.resource_version, 5), 1)
    assert modified.type == "MODIFIED"
    assert modified.object["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
