"""Applying a node's new MIG layout the way clusters run NVIDIA's MIG manager.

1. Render the node's whole layout as a named mig-parted config (``inventory.domain.mig_parted``) into
   the ConfigMap the MIG manager reads (kgm's own, ``kgm-*`` entries; the others are left alone).
2. Label the node ``nvidia.com/mig.config=<name>`` and, in the same write, ``nvidia.com/mig.config.state
   =pending``: the MIG manager sets ``pending`` itself when it starts, but until then the extender
   would still place MIG pods on instances about to be destroyed; from this write on it keeps them
   off the node (``inventory.domain.shape``).
3. Done when the node's labels show that config with ``state=success`` (a success seen with our
   config is later than our ``pending``) *and* the agent's GpuNode report shows the layout: only then
   does the new capacity exist. ``failed``, or no end within ``apply_timeout_s``, ends it too, logged;
   a change still ``pending`` then (the MIG manager never took it over) has its labels put back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from inventory.domain.labels import MIG_CHANGED_AT, MIG_CONFIG_LABEL, MIG_CONFIG_STATE_LABEL
from inventory.domain.mig_parted import (
    CONFIG_KEY,
    NAME_PREFIX,
    GpuTarget,
    config_name,
    merged_config,
    reported,
    targets_of,
)
from inventory.domain.mig_plan import GpuChange
from inventory.domain.model import GpuDevice, NodeName
from inventory.domain.times import format_time
from inventory.kube import KubeConflictError
from inventory.layouts.signals import MigLabels


class MigConfigStore(Protocol):
    """``inventory.kube.KubeClient`` implements it."""

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def update_configmap_data(
        self, namespace: str, name: str, data: Mapping[str, str], *, resource_version: str
    ) -> dict[str, Any]: ...

    def patch_node_metadata(
        self,
        name: str,
        *,
        labels: Mapping[str, str | None],
        annotations: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Applying:
    """A node whose new layout was asked for and has not been seen done."""

    node: NodeName
    config: str
    targets: tuple[GpuTarget, ...]
    #: Monotonic seconds when the label was set.
    started_s: float
    #: The node's MIG manager labels before ours, put back if the MIG manager never takes over.
    previous: MigLabels


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an application ended: ``applied``, ``failed`` or ``timed_out``."""

    applying: Applying
    result: str
    seconds: float


class MigApplier:
    """Not thread-safe: driven by the planning loop alone."""

    def __init__(
        self,
        store: MigConfigStore,
        *,
        namespace: str,
        configmap: str,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._wall_clock = wall_clock
        self._namespace = namespace
        self._configmap = configmap
        self._timeout_s = timeout_s
        self._clock = clock
        self._applying: dict[NodeName, Applying] = {}

    @property
    def applying(self) -> Mapping[NodeName, Applying]:
        return dict(self._applying)

    def start(
        self,
        node: NodeName,
        gpus: Sequence[GpuDevice],
        changes: Sequence[GpuChange],
        *,
        labels: Mapping[NodeName, MigLabels],
    ) -> Applying:
        """Write the node's config and label the node (a :class:`inventory.kube.KubeError` leaves the node
        unlabelled: nothing is asked of the MIG manager until both writes are made)."""
        targets = targets_of(gpus, changes)
        name = config_name(targets)
        # kgm's configs still asked for by some node stay; the rest are pruned as the new one goes in.
        keep = {m.config for m in labels.values() if m.config and m.config.startswith(NAME_PREFIX)}
        keep |= {a.config for a in self._applying.values()}
        self._write_config(name, targets, keep)
        self._store.patch_node_metadata(
            node,
            labels={MIG_CONFIG_LABEL: name, MIG_CONFIG_STATE_LABEL: "pending"},
            annotations={MIG_CHANGED_AT: format_time(self._wall_clock())},
        )
        applying = Applying(
            node=node,
            config=name,
            targets=targets,
            started_s=self._clock(),
            previous=labels.get(node, MigLabels()),
        )
        self._applying[node] = applying
        return applying

    def _write_config(self, name: str, targets: Sequence[GpuTarget], keep: Iterable[str]) -> None:
        for _ in range(3):  # another writer between our read and write: read again
            found = self._store.get_configmap(self._namespace, self._configmap)
            existing = ((found or {}).get("data") or {}).get(CONFIG_KEY)
            text = merged_config(existing, name=name, targets=targets, keep=keep)
            try:
                if found is None:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": self._configmap,
                            "labels": {"app.kubernetes.io/managed-by": "kgm"},
                        },
                        "data": {CONFIG_KEY: text},
                    }
                    self._store.create_configmap(self._namespace, body)
                else:
                    version = str((found.get("metadata") or {}).get("resourceVersion") or "")
                    self._store.update_configmap_data(
                        self._namespace, self._configmap, {CONFIG_KEY: text}, resource_version=version
                    )
                return
            except KubeConflictError:
                continue
        raise KubeConflictError(f"configmap {self._namespace}/{self._configmap}: changed under every write")

    def check(
        self,
        shown: Mapping[NodeName, Sequence[GpuDevice]],
        labels: Mapping[NodeName, MigLabels],
        *,
        may_write: bool = True,
    ) -> list[Outcome]:
        """The applications that ended since the last check (each reported once); ``shown``: each
        node's GPUs as its agent last reported them; ``may_write``: whether this replica still
        holds the Lease (only then are a timed-out change's labels put back)."""
        now = self._clock()
        ended: list[Outcome] = []
        for node, applying in list(self._applying.items()):
            label = labels.get(node, MigLabels())
            result = None
            if label.config == applying.config and label.state == "failed":
                result = "failed"
            elif (
                label.config == applying.config
                and label.state == "success"
                and node in shown
                and reported(shown[node], applying.targets)
            ):
                result = "applied"
            elif now - applying.started_s > self._timeout_s:
                result = "timed_out"
                if may_write and label.config == applying.config and label.state == "pending":
                    # Nobody took the change over (no MIG manager, or one pointed at another
                    # ConfigMap): our "pending" would keep MIG pods off the node for good.
                    self._restore(applying)
            if result is not None:
                del self._applying[node]
                ended.append(Outcome(applying=applying, result=result, seconds=now - applying.started_s))
        return ended

    def _restore(self, applying: Applying) -> None:
        previous = applying.previous
        self._store.patch_node_metadata(
            applying.node, labels={MIG_CONFIG_LABEL: previous.config, MIG_CONFIG_STATE_LABEL: previous.state}
        )
