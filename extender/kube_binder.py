"""The Binder that writes Bindings through the Kubernetes API (live mode only: it loads the client)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extender.bind import BindError
from inventory.kube import KubeClient, KubeConflictError, KubeError


class KubeBinder:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def bind(self, pod: Mapping[str, Any], node: str, *, timeout_s: float) -> None:
        metadata = pod.get("metadata") or {}
        try:
            self._kube.create_binding(
                namespace=str(metadata.get("namespace", "")),
                name=str(metadata.get("name", "")),
                uid=str(metadata.get("uid", "")),
                node=node,
                timeout_s=timeout_s,
            )
        except KubeConflictError as error:
            raise BindError(f"pod is already bound or was replaced: {error}") from error
        except KubeError as error:
            raise BindError(f"binding failed: {error}") from error
