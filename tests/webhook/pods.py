"""Small pods for the webhook's tests, and applying a decision to them."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from webhook.mutation import Admit, Deny


def gpus(count: int | str, name: str = "cuda") -> dict[str, Any]:
    return container(name, {"nvidia.com/gpu": str(count)})


def container(name: str, limits: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
        "resources": {"limits": dict(limits), "requests": dict(limits)},
    }


def pod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    scheduler: str | None = "default-scheduler",
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "job-", "namespace": "ml"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def apply(original: dict[str, Any], decision: Admit | Deny) -> dict[str, Any]:
    assert isinstance(decision, Admit), decision
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(original), decision.patch)
    return result
