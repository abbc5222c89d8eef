"""In a cluster, bind writes a Binding through the official client, with the pod's UID."""

from __future__ import annotations

import time

import yaml

from extender.gpu_extender import BIND_TIMEOUT_S, GpuExtender
from extender.kube_binder import KubeBinder
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from tests.extender.clusters import cache, gpu_pod, node
from tests.support.data import REPO
from tests.support.kube_emulator import PODS, KubeEmulator


def test_bind_posts_a_binding_with_the_uid_precondition(kube_emulator: KubeEmulator) -> None:
    created = kube_emulator.create(PODS, gpu_pod("ignored", {"nvidia.com/gpu": "1"}))
    uid, name = created["metadata"]["uid"], created["metadata"]["name"]
    extender = GpuExtender(
        cache=cache([node("gpu-1", count=2)]),
        binder=KubeBinder(kube_emulator.client),
        prices=PriceTable(),
        fetch_pod=kube_emulator.client.get_pod,
    )
    # No filter call first: the extender asks the API server for the pod.
    assert extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1") is None
    binding = kube_emulator.stored("v1/bindings", name, namespace="ml")
    assert binding is not None
    assert binding["metadata"]["uid"] == uid
    assert binding["target"] == {"apiVersion": "v1", "kind": "Node", "name": "gpu-1"}


def test_a_refused_binding_is_reported_and_rolled_back(kube_emulator: KubeEmulator) -> None:
    created = kube_emulator.create(PODS, gpu_pod("ignored", {"nvidia.com/gpu": "2"}))
    uid, name = created["metadata"]["uid"], created["metadata"]["name"]
    c = cache([node("gpu-1", count=2)])
    extender = GpuExtender(
        cache=c,
        binder=KubeBinder(kube_emulator.client),
        prices=PriceTable(),
        fetch_pod=kube_emulator.client.get_pod,
    )
    with kube_emulator.unavailable():
        unknown = extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1")
        assert unknown is not None and unknown.startswith(f"cannot read pod ml/{name}")
        extender.filter(created, ["gpu-1"])  # now known from a filter call: the Binding itself fails
        error = extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1")
    assert error is not None and error.startswith("binding failed:")
    assert c.assumed(uid) is None
    assert extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1") is None  # the retry goes through


def test_a_slow_binding_answers_an_error_in_time_and_releases_the_hold(kube_emulator: KubeEmulator) -> None:
    created = kube_emulator.create(PODS, gpu_pod("ignored", {"nvidia.com/gpu": "2"}))
    uid, name = created["metadata"]["uid"], created["metadata"]["name"]
    c = cache([node("gpu-1", count=2)])
    # The client's usual timeouts are a production's (30 s to answer): only the bind's own deadline helps.
    kube = kube_emulator.new_client(request_timeout=30.0, connect_timeout=5.0)
    extender = GpuExtender(
        cache=c, binder=KubeBinder(kube), prices=PriceTable(), fetch_pod=kube.get_pod, bind_timeout_s=0.5
    )
    extender.filter(created, ["gpu-1"])
    kube_emulator.inject_delay(3.0, action="create", resource="v1/bindings")
    started = time.monotonic()
    error = extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1")
    assert time.monotonic() - started < 1.5
    assert error is not None and error.startswith("binding failed:") and "ReadTimeoutError" in error
    assert c.assumed(uid) is None
    assert c.snapshot().capacity(NodeName("gpu-1")).full_gpus_free == 2


def test_reading_the_pod_counts_against_the_bind_deadline_and_is_not_retried(
    kube_emulator: KubeEmulator,
) -> None:
    created = kube_emulator.create(PODS, gpu_pod("ignored", {"nvidia.com/gpu": "1"}))
    uid, name = created["metadata"]["uid"], created["metadata"]["name"]
    kube = kube_emulator.new_client(request_timeout=30.0, connect_timeout=5.0)
    extender = GpuExtender(
        cache=cache([node("gpu-1", count=2)]),
        binder=KubeBinder(kube),
        prices=PriceTable(),
        fetch_pod=kube.get_pod,
        bind_timeout_s=0.5,
    )
    kube_emulator.inject_delay(3.0, action="fetch", resource=PODS)
    started = time.monotonic()
    error = extender.bind(namespace="ml", name=name, uid=uid, node="gpu-1")
    assert time.monotonic() - started < 1.5  # urllib3 would retry a timed-out GET 3 times, 0.5 s each
    assert error is not None and error.startswith(f"cannot read pod ml/{name}")


def test_the_bind_deadline_ends_before_kube_schedulers_http_timeout() -> None:
    documents = yaml.safe_load_all((REPO / "manifests" / "scheduler" / "kgm-scheduler.yaml").read_text())
    configmap = next(d for d in documents if d and d["kind"] == "ConfigMap")
    (extender,) = yaml.safe_load(configmap["data"]["config.yaml"])["extenders"]
    http_timeout = extender["httpTimeout"]
    assert http_timeout.endswith("s")
    assert float(http_timeout.removesuffix("s")) >= BIND_TIMEOUT_S + 0.5
