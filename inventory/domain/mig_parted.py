"""A node's MIG layout as a config of NVIDIA's MIG manager (``nvidia-mig-parted``), and back (pure).

The MIG manager applies the named config its node's ``nvidia.com/mig.config`` label asks for, from
a ConfigMap of the form (``api/spec/v1/spec.go`` of NVIDIA/mig-parted)::

    version: v1
    mig-configs:
      kgm-3f9c0a1b2d:
        - devices: [0, 1]
          mig-enabled: false
        - devices: [2]
          mig-enabled: true
          mig-devices: {"1g.10gb": 2, "3g.40gb": 1}

One named config per node layout, listing every GPU the planner sees on the node (GPUs alike share
an entry). Its name is derived from its content: a node changes config only when its layout does,
so the label changes, which is what the MIG manager reacts to, and nodes laid out alike share one
entry. mig-parted chooses where each instance goes; the layout is judged done by profile counts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from inventory.domain.mig_candidates import Layout
from inventory.domain.mig_plan import GpuChange
from inventory.domain.model import GpuDevice

VERSION = "v1"
#: The ConfigMap key the MIG manager reads (the GPU Operator mounts it as its config file).
CONFIG_KEY = "config.yaml"
#: Names of the configs kgm writes; other entries of the ConfigMap are left as they are.
NAME_PREFIX = "kgm-"


class MigPartedConfigError(ValueError):
    """A ConfigMap's config that kgm will not overwrite (not mig-parted's format)."""


@dataclass(frozen=True, slots=True)
class GpuTarget:
    """One GPU of a node config: MIG off (``profiles`` None), or MIG on with these instances."""

    index: int
    profiles: Mapping[str, int] | None


def targets_of(gpus: Iterable[GpuDevice], changes: Sequence[GpuChange]) -> tuple[GpuTarget, ...]:
    """The node's whole layout once ``changes`` are made: the changed GPUs' new layouts, the others
    as they are. Unhealthy GPUs and GPUs waiting for a mode change are left out (mig-parted leaves
    a GPU that no entry names alone)."""
    after = {change.gpu: change.after for change in changes}
    targets = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        if not gpu.healthy or gpu.mig_pending:
            continue
        layout: Layout = after[gpu.index] if gpu.index in after else _layout(gpu)
        targets.append(GpuTarget(gpu.index, _counts(layout)))
    return tuple(targets)


def entries(targets: Sequence[GpuTarget]) -> list[dict[str, Any]]:
    """The config's entries: one per distinct GPU layout, naming its GPUs by index."""
    groups: dict[tuple[tuple[str, int], ...] | None, list[int]] = {}
    for target in targets:
        key = None if target.profiles is None else tuple(sorted(target.profiles.items()))
        groups.setdefault(key, []).append(target.index)
    result: list[dict[str, Any]] = []
    for key, devices in sorted(groups.items(), key=lambda kv: kv[1]):
        entry: dict[str, Any] = {"devices": sorted(devices), "mig-enabled": key is not None}
        if key is not None:
            entry["mig-devices"] = dict(key)
        result.append(entry)
    return result


def config_name(targets: Sequence[GpuTarget]) -> str:
    """``kgm-`` and a digest of the layout: equal layouts, equal names."""
    text = yaml.safe_dump(entries(targets), sort_keys=True)
    return NAME_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:10]


def merged_config(
    existing: str | None, *, name: str, targets: Sequence[GpuTarget], keep: Iterable[str] = ()
) -> str:
    """The ConfigMap's config with ``name`` set to ``targets``; kgm's other configs stay only if in
    ``keep`` (names some node's label still asks for), entries kgm did not write always stay."""
    configs: dict[str, Any] = {}
    if existing is not None and existing.strip():
        configs = dict(_configs(existing))
    kept = set(keep)
    configs = {n: c for n, c in configs.items() if not n.startswith(NAME_PREFIX) or n in kept}
    configs[name] = entries(targets)
    return yaml.safe_dump({"version": VERSION, "mig-configs": configs}, sort_keys=True)


def _configs(text: str) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise MigPartedConfigError(f"the MIG manager's config is not YAML: {error}") from error
    if not isinstance(document, Mapping) or document.get("version") != VERSION:
        raise MigPartedConfigError(f"the MIG manager's config is not mig-parted's version {VERSION}")
    configs = document.get("mig-configs", {})
    if not isinstance(configs, Mapping):
        raise MigPartedConfigError("the MIG manager's config has no mapping of mig-configs")
    return configs


def reported(gpus: Iterable[GpuDevice], targets: Sequence[GpuTarget]) -> bool:
    """Whether a node's report shows the layout: each GPU in the wanted mode (and no change of mode
    pending), with the wanted number of instances of each profile."""
    by_index = {gpu.index: gpu for gpu in gpus}
    for target in targets:
        gpu = by_index.get(target.index)
        if gpu is None or gpu.mig_pending or gpu.mig_enabled != (target.profiles is not None):
            return False
        if target.profiles is not None and Counter(i.profile.name for i in gpu.mig_instances) != Counter(
            target.profiles
        ):
            return False
    return True


def _layout(gpu: GpuDevice) -> Layout:
    return gpu.mig_instances if gpu.mig_enabled else None


def _counts(layout: Layout) -> dict[str, int] | None:
    return None if layout is None else dict(sorted(Counter(i.profile.name for i in layout).items()))
