"""The Kubernetes adapter's errors: HTTP statuses and watch ERROR events become our exception tree,
chained; a refused, failing or silent server is unavailable and no library exception escapes;
credentials never appear in errors; the configuration comes from the kubeconfig or the pod."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from inventory.kube import (
    KubeClient,
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
)
from tests.inventory.kube_objects import gpunode, names, take
from tests.support.kube_emulator import (
    GPUNODES,
    NODES,
    KubeEmulator,
    eventually,
    running_emulator,
)


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
    from inventory.kube.transport import _event  # noqa: PLC0415

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
