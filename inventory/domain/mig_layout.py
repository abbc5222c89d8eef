"""Whether a set of MIG instances can exist together on one GPU, and where each one sits.

NVIDIA's placement rule: an instance of a profile may only start at one of the profile's placement
starts and occupies memory slices ``[start, start + placement_size)``; instances never overlap, the
compute slices they use add up to at most the GPU's, and no profile exceeds its ``max_instances``.
A layout that breaks the rule cannot be created with ``nvidia-smi mig -cgi``, so a cluster file that
claims one is wrong and must be refused rather than trusted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from inventory.domain.catalogue import CatalogueError, GpuModel, MigProfile


class MigLayoutError(ValueError):
    """MIG instances that cannot coexist on one GPU."""


@dataclass(frozen=True, slots=True)
class MigInstance:
    """A MIG instance: its profile and the memory slice it starts at."""

    profile: MigProfile
    start: int
    #: The MIG device's UUID when read live (``MIG-...``); None in a cluster description.
    uuid: str | None = None

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.profile.placement_size)


def place_instances(model: GpuModel, profile_names: Sequence[str]) -> tuple[MigInstance, ...]:
    """Positions for ``profile_names`` on one GPU of ``model``, largest first, or MigLayoutError.

    Searches every combination of placement starts (at most 7 instances, a few starts each), so a
    layout that fits is always found, whatever order the names come in.
    """
    if not model.mig_capable:
        raise MigLayoutError(f"{model.name} does not support MIG")
    try:
        profiles = sorted(
            (model.profile(name) for name in profile_names),
            key=lambda p: (-p.placement_size, p.name),
        )
    except CatalogueError as error:
        raise MigLayoutError(str(error)) from error

    counts = Counter(p.name for p in profiles)
    for profile in {p.name: p for p in profiles}.values():
        if counts[profile.name] > profile.max_instances:
            raise MigLayoutError(
                f"{counts[profile.name]} x {profile.name} on one {model.name}: "
                f"at most {profile.max_instances} fit"
            )
    compute = sum(p.compute_slices for p in profiles)
    if compute > model.compute_slices_total:
        raise MigLayoutError(
            f"{', '.join(profile_names)} need {compute} compute slices; "
            f"a {model.name} has {model.compute_slices_total}"
        )

    placed = _search(profiles, 0, frozenset(), model.memory_slices_total)
    if placed is None:
        raise MigLayoutError(
            f"{', '.join(profile_names)} do not fit together on one {model.name} "
            "under NVIDIA's placement rules"
        )
    return tuple(placed)


def _search(
    profiles: Sequence[MigProfile], index: int, used: frozenset[int], total_slices: int
) -> list[MigInstance] | None:
    if index == len(profiles):
        return []
    profile = profiles[index]
    for start in profile.placement_starts:
        occupied = frozenset(range(start, start + profile.placement_size))
        if max(occupied) >= total_slices or occupied & used:
            continue
        rest = _search(profiles, index + 1, used | occupied, total_slices)
        if rest is not None:
            return [MigInstance(profile=profile, start=start), *rest]
    return None
