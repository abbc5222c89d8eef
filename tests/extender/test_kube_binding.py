"""In a cluster, bind writes a Binding through the official client, with the pod's UID."""

from __future__ import annotations

from extender.gpu_extender import GpuExtender
from extender.kube_binder import KubeBinder
from inventory.domain.prices import PriceTable
from tests.extender.clusters import cache, gpu_pod, node
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
