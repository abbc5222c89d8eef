"""GPU models and their MIG profiles.

The MIG tables ship inside the package (``data/mig-profiles.json``, a verbatim copy of the project's
reference tables) so the installed program never reads anything outside itself. Models that cannot
be partitioned (T4, L4, ...) come from a short built-in list and can be extended in a cluster file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from inventory.domain.labels import MIG_RESOURCE_PREFIX

_NOMINAL_MEMORY = re.compile(r"\.(\d+)gb")


class CatalogueError(ValueError):
    """A GPU model or MIG profile that the catalogue does not know."""


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile of one GPU model, e.g. ``3g.40gb`` on an H100-80GB."""

    name: str
    compute_slices: int
    memory_slices: int
    #: The memory in the profile's name (``40`` for 3g.40gb): what users read and ask for.
    memory_gb: int
    max_instances: int
    placement_starts: tuple[int, ...]
    placement_size: int
    #: Media extensions (``+me``): scarce, and never chosen for a plain GPU request.
    media_extensions: bool
    #: The device plugin's name for it; '+' becomes '.' (1g.10gb+me -> nvidia.com/mig-1g.10gb.me).
    resource_name: str = field(init=False)

    def __post_init__(self) -> None:
        # Stored, not derived on each read: admission looks it up several times per pod.
        object.__setattr__(self, "resource_name", MIG_RESOURCE_PREFIX + self.name.replace("+", "."))


@dataclass(frozen=True, slots=True)
class GpuModel:
    """A GPU model: its nominal memory and, when it supports MIG, its slices and profiles."""

    name: str
    memory_gb: int
    product_names: tuple[str, ...]
    compute_slices_total: int = 0
    memory_slices_total: int = 0
    profiles: tuple[MigProfile, ...] = ()
    #: Values of the ``nvidia.com/gpu.product`` node label that gpu-feature-discovery writes.
    product_labels: tuple[str, ...] = field(init=False)
    #: Every name the model is known by, lower-cased, for case-insensitive matching.
    aliases: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        labels = tuple(name.replace(" ", "-") for name in self.product_names)
        object.__setattr__(self, "product_labels", labels)
        names = (self.name, *self.product_names, *labels)
        object.__setattr__(self, "aliases", frozenset(n.lower() for n in names))

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    def profile(self, name: str) -> MigProfile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.profiles) or "none (no MIG support)"
        raise CatalogueError(f"{self.name} has no MIG profile {name!r}; its profiles: {known}")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every GPU model the system knows, looked up by name, product name or product label."""

    models: tuple[GpuModel, ...]

    def model(self, name: str) -> GpuModel:
        wanted = name.strip().lower()
        for model in self.models:
            if wanted in model.aliases:
                return model
        known = ", ".join(m.name for m in self.models)
        raise CatalogueError(f"unknown GPU model {name!r}; known models: {known}")

    def with_models(self, extra: Iterable[GpuModel]) -> Catalogue:
        """A catalogue where ``extra`` models are added, replacing same-named ones."""
        added = {m.name: m for m in extra}
        kept = tuple(m for m in self.models if m.name not in added)
        return Catalogue(models=kept + tuple(added.values()))


# Models without MIG that production clusters commonly mix in next to MIG-capable ones.
_PLAIN_MODELS = (
    GpuModel(name="T4-16GB", memory_gb=16, product_names=("Tesla T4",)),
    GpuModel(name="V100-32GB", memory_gb=32, product_names=("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB")),
    GpuModel(name="A10-24GB", memory_gb=24, product_names=("NVIDIA A10",)),
    GpuModel(name="L4-24GB", memory_gb=24, product_names=("NVIDIA L4",)),
    GpuModel(name="L40S-48GB", memory_gb=48, product_names=("NVIDIA L40S",)),
)


def _profile_from_table(row: Mapping[str, Any]) -> MigProfile:
    name = str(row["name"])
    match = _NOMINAL_MEMORY.search(name)
    if match is None:
        raise CatalogueError(f"MIG profile name {name!r} does not carry its memory size")
    return MigProfile(
        name=name,
        compute_slices=int(row["compute_slices"]),
        memory_slices=int(row["memory_slices"]),
        memory_gb=int(match.group(1)),
        max_instances=int(row["max_instances"]),
        placement_starts=tuple(int(s) for s in row["placement_starts"]),
        placement_size=int(row["placement_size"]),
        media_extensions=bool(row["media_extensions"]),
    )


def _model_name(row: Mapping[str, Any]) -> str:
    # "H100-80GB (SXM5 and PCIe)" -> "H100-80GB": the short name is what people write.
    return str(row["model"]).split(" ", 1)[0]


def _model_from_table(row: Mapping[str, Any]) -> GpuModel:
    name = _model_name(row)
    memory = re.search(r"-(\d+)GB$", name)
    if memory is None:
        raise CatalogueError(f"GPU model name {name!r} does not carry its memory size")
    return GpuModel(
        name=name,
        memory_gb=int(memory.group(1)),
        product_names=tuple(str(p) for p in row["product_names"]),
        compute_slices_total=int(row["compute_slices_total"]),
        memory_slices_total=int(row["memory_slices_total"]),
        profiles=tuple(_profile_from_table(p) for p in row["profiles"]),
    )


def parse_mig_tables(document: Mapping[str, Any]) -> tuple[GpuModel, ...]:
    """GPU models from a document in the format of ``mig-profiles.json``."""
    return tuple(_model_from_table(row) for row in document["gpus"])


@cache
def _packaged_mig_tables() -> Mapping[str, Any]:
    # Read once: the data never changes at run time. Callers only read it.
    text = resources.files("inventory").joinpath("data/mig-profiles.json").read_text(encoding="utf-8")
    document: Mapping[str, Any] = json.loads(text)
    return document


@cache
def builtin_catalogue() -> Catalogue:
    """The catalogue shipped with the package."""
    return Catalogue(models=parse_mig_tables(_packaged_mig_tables()) + _PLAIN_MODELS)


def packaged_profile_rows() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(model name, profile row) for every profile of the packaged MIG tables, for the figures that
    :class:`MigProfile` does not keep (NVML's GPU-instance profile id, nvidia-smi's memory size)."""
    for row in _packaged_mig_tables()["gpus"]:
        for profile in row["profiles"]:
            yield _model_name(row), profile
