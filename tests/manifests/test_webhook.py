"""The MutatingWebhookConfiguration's matchConditions, evaluated with a CEL interpreter: the pods they
send to the webhook hold exactly the resources kgm-scheduler's extender manages (``managedResources``,
kube-scheduler's ``IsInterested``), which are ``nvidia.com/gpu`` and every MIG resource the catalogue
knows. A pod routed to kgm-scheduler that its extender ignores would be bound from allocatable counts
alone; a managed pod the webhook never saw would bypass the MIG rewrite and the cost labels."""

from __future__ import annotations

from functools import cache
from typing import Any

import celpy
import pytest
import yaml

from inventory.domain.catalogue import builtin_catalogue
from tests.manifests.test_scheduler import WEBHOOK_MANIFEST, extender

UNMANAGED = [
    "cpu",
    "memory",
    "nvidia.com/mig-9g.999gb",
    "nvidia.com/gpu.shared",
    "amd.com/gpu",
    "nvidia.com/",
]


def catalogue_resources() -> set[str]:
    catalogue = builtin_catalogue()
    return {"nvidia.com/gpu"} | {p.resource_name for m in catalogue.models for p in m.profiles}


def managed_resources() -> set[str]:
    return {resource["name"] for resource in extender()["managedResources"]}


@cache
def conditions() -> tuple[Any, ...]:
    (hook,) = yaml.safe_load(WEBHOOK_MANIFEST.read_text())["webhooks"]
    env = celpy.Environment()
    return tuple(env.program(env.compile(c["expression"])) for c in hook["matchConditions"])


def sent(pod: dict[str, Any], *, old: dict[str, Any] | None = None) -> bool:
    """Whether the API server calls the webhook for this pod (a CREATE; an UPDATE from ``old``): every
    condition true."""
    activation = {
        "object": celpy.json_to_cel(pod),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel({"operation": "CREATE" if old is None else "UPDATE"}),
    }
    return all(bool(program.evaluate(activation)) for program in conditions())


def is_interested(pod: dict[str, Any], managed: set[str]) -> bool:
    """kube-scheduler's HTTPExtender.IsInterested: a managed resource in any container's requests or
    limits (pods here carry requests equal to their limits, as the API server defaults them)."""
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    return any(
        name in managed
        for c in containers
        for section in ("requests", "limits")
        for name in c.get("resources", {}).get(section, {})
    )


def pod_with(resource: str, *, init: bool = False) -> dict[str, Any]:
    limits = {"cpu": "1", resource: "1"}
    holder = {"name": "gpu", "image": "x", "resources": {"limits": limits, "requests": dict(limits)}}
    plain = {"name": "app", "image": "x"}
    spec: dict[str, Any] = {"containers": [plain, holder] if not init else [plain]}
    if init:
        spec["initContainers"] = [holder]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def test_the_extender_manages_the_catalogues_resources() -> None:
    assert managed_resources() == catalogue_resources()


@pytest.mark.parametrize("resource", sorted(catalogue_resources()) + UNMANAGED)
@pytest.mark.parametrize("init", [False, True], ids=["container", "init container"])
def test_the_webhook_sees_exactly_the_pods_the_extender_judges(resource: str, init: bool) -> None:
    pod = pod_with(resource, init=init)
    assert sent(pod) is is_interested(pod, managed_resources()) is (resource in catalogue_resources())


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"containers": [{"name": "a", "image": "x"}]}, id="no resources"),
        pytest.param({"containers": [{"name": "a", "image": "x", "resources": {}}]}, id="empty resources"),
        pytest.param(
            {"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "1"}}}]},
            id="requests only",
        ),
        pytest.param({"containers": [{"name": "a", "image": "x"}], "initContainers": []}, id="no init"),
    ],
)
def test_pods_without_gpu_resources_are_not_sent(spec: dict[str, Any]) -> None:
    assert sent({"metadata": {}, "spec": spec}) is False


def claiming(allocation_id: str | None) -> dict[str, Any]:
    pod = pod_with("nvidia.com/gpu")
    if allocation_id is not None:
        pod["metadata"]["annotations"] = {"gpu.kgm.io/allocation-id": allocation_id}
    return pod


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(None, "r1", True, id="a claim added"),
        pytest.param("r1", "r2", True, id="a claim changed"),
        pytest.param("r1", None, True, id="a claim removed"),
        pytest.param("r1", "r1", False, id="the same claim"),
        pytest.param(None, None, False, id="no claim"),
    ],
)
def test_an_update_is_sent_only_when_it_changes_the_claim(
    before: str | None, after: str | None, expected: bool
) -> None:
    assert sent(claiming(after), old=claiming(before)) is expected
