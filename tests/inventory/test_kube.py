"""The Kubernetes adapter through the official client against kmock's emulator on loopback, the Reflector
end to end on top of it, and the GpuNode CRD against what an agent writes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from jsonschema import Draft202012Validator
from kubernetes.client.exceptions import ApiException

from inventory.kube import (
    KubeClient,
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
    Listing,
    WatchEvent,
)
from inventory.live.reflector import Reflector
from tests.support.kube_emulator import (
    GPUNODES,
    NODES,
    PODS,
    KubeEmulator,
    SeenRequest,
    eventually,
    running_emulator,
)

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "gpunode.yaml"


def gpunode(name: str, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "gpu.kgm.io/v1alpha1",
        "kind": "GpuNode",
        "metadata": {"name": name},
        "spec": {"nodeName": name},
    }
    return body | ({"status": status} if status else {})


def pod(name: str, namespace: str = "ml", node: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }


def take(events: Iterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The first ``count`` events of a watch, then the watch is closed (no waiting for its timeout)."""
    taken = [event for _, event in zip(range(count), events, strict=False)]
    events.close()  # type: ignore[attr-defined]
    return taken


def names(listing: Listing) -> list[str]:
    return sorted(item["metadata"]["name"] for item in listing.items)


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


# Errors


def test_an_expired_version_in_the_watch_stream_is_gone(kube_emulator: KubeEmulator) -> None:
    version = kube_emulator.client.list_gpunodes().resource_version
    kube_emulator.inject_watch_gone()
    with pytest.raises(KubeGoneError) as caught:
        list(kube_emulator.client.watch_gpunodes(version, 5))
    assert caught.value.status == 410
    assert "too old resource version" in str(caught.value)
    # Only once: the next watch is served as usual.
    kube_emulator.client.create_gpunode(gpunode("n1"))
    assert take(kube_emulator.client.watch_gpunodes(version, 5), 1)[0].type == "ADDED"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (404, KubeNotFoundError),
        (409, KubeConflictError),
        (410, KubeGoneError),
        (403, KubeError),
        (500, KubeUnavailableError),
        (429, KubeUnavailableError),
    ],
)
def test_an_error_event_maps_its_code_like_an_http_status(code: int, error: type[KubeError]) -> None:
    from inventory.kube import _event  # noqa: PLC0415

    line = b'{"type":"ERROR","object":{"kind":"Status","code":%d,"reason":"R","message":"m"}}' % code
    with pytest.raises(error) as caught:
        _event(line, "watch things")
    assert type(caught.value) is error and caught.value.status == code


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CALLS: dict[str, Callable[[KubeClient], object]] = {
    "get_gpunode": lambda kube: kube.get_gpunode("n1"),
    "create_gpunode": lambda kube: kube.create_gpunode(gpunode("n1")),
    "update_gpunode_status": lambda kube: kube.update_gpunode_status("n1", {"heartbeatGeneration": 1}),
    "list_gpunodes": lambda kube: kube.list_gpunodes(),
    "watch_gpunodes": lambda kube: list(kube.watch_gpunodes("1", 5)),
    "list_pods": lambda kube: kube.list_pods(),
    "watch_pods": lambda kube: list(kube.watch_pods("1", 5)),
    "list_nodes": lambda kube: kube.list_nodes(),
    "watch_nodes": lambda kube: list(kube.watch_nodes("1", 5)),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_refused_connection_is_unavailable_and_no_library_exception_escapes(
    call: Callable[[KubeClient], object],
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        KubeClient.from_url(url, connect_timeout=1, request_timeout=1) as kube,
        pytest.raises(KubeUnavailableError) as caught,
    ):
        call(kube)
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, urllib3.exceptions.HTTPError)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_server_answering_503_is_unavailable_and_no_library_exception_escapes(
    kube_emulator: KubeEmulator, call: Callable[[KubeClient], object]
) -> None:
    with kube_emulator.unavailable(), pytest.raises(KubeUnavailableError) as caught:
        call(kube_emulator.client)
    assert caught.value.status == 503
    assert isinstance(caught.value.__cause__, ApiException)
    assert kube_emulator.stored(GPUNODES, "n1") is None  # nothing was written while it was down


def test_a_silent_server_times_out_as_unavailable() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        kube = KubeClient.from_url(url, connect_timeout=1, request_timeout=0.2)
        with kube, pytest.raises(KubeUnavailableError) as caught:
            kube.list_nodes()
    assert isinstance(caught.value.__cause__, urllib3.exceptions.HTTPError)


def test_credentials_never_appear_in_errors(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}],
                "users": [{"name": "u", "user": {"token": "s3cr3t-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kube = KubeClient.from_environment(
        environ={"KUBECONFIG": str(kubeconfig)}, connect_timeout=1, request_timeout=1
    )
    with kube, pytest.raises(KubeUnavailableError) as caught:
        kube.list_pods()
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(caught.value.__cause__)


def test_a_missing_configuration_is_a_kube_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="kubeconfig"):
        KubeClient.from_environment(environ={"KUBECONFIG": str(tmp_path / "absent")})
    with pytest.raises(KubeError, match="in-cluster"):
        KubeClient.from_environment(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_the_kubeconfig_leads_to_the_server(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": kube_emulator.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kube_emulator.create(NODES, {"metadata": {"name": "n1"}})
    with KubeClient.from_environment(environ={"KUBECONFIG": str(kubeconfig)}) as kube:
        assert names(kube.list_nodes()) == ["n1"]
    (listed,) = [r for r in kube_emulator.requests(action="list") if not r.from_harness]
    assert listed.path == "/api/v1/nodes"


def test_stopping_the_emulator_ends_the_watches_still_open() -> None:
    outcome: list[str] = []
    with running_emulator() as kube:
        watcher = threading.Thread(
            target=lambda: outcome.extend(e.type for e in kube.client.watch_nodes("", 300))
        )
        watcher.start()
        eventually(lambda: kube.requests(action="watch"))
        started = time.monotonic()
    watcher.join(timeout=2)
    assert time.monotonic() - started < 2
    assert (outcome, watcher.is_alive()) == ([], False)


# The Reflector end to end


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


# The CRD


def crd_status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused: what the API server would prune is an error here."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema:
            schema["additionalProperties"] = False
    return schema


def test_the_crd_declares_the_gpunode_resource_with_a_status_subresource() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "gpunodes.gpu.kgm.io"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["shortNames"]) == (
        "gpu.kgm.io",
        "Cluster",
        "GpuNode",
        ["gn"],
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"], version["subresources"]) == (
        "v1alpha1",
        True,
        True,
        {"status": {}},
    )


def test_everything_an_agent_writes_fits_the_crd_schema_so_nothing_is_pruned() -> None:
    from inventory.domain.readings import DeviceAssignment  # noqa: PLC0415
    from tests.inventory.gpunodes import SEVEN_SMALL, gpu  # noqa: PLC0415
    from tests.inventory.gpunodes import gpunode as agent_gpunode  # noqa: PLC0415

    assignments = [DeviceAssignment("ml", "p", "c", "nvidia.com/mig-1g.10gb", ("MIG-n1-0-0",))]
    body = agent_gpunode(
        "n1", [gpu(0, node="n1", mig=SEVEN_SMALL), gpu(1, node="n1")], assignments=assignments
    )
    body["status"]["gpus"][1] |= {
        "powerWatts": 312.5,
        "eccVolatileUncorrected": 0,
        "error": "x",
        "retiredPagesPending": False,
        "remappedRowsPending": False,
    }
    validator = Draft202012Validator(closed(crd_status_schema()))
    assert [error.message for error in validator.iter_errors(body["status"])] == []
