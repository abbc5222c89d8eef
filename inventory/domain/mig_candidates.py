"""The layouts a GPU may be given: every set of MIG instances NVIDIA's placement rules allow around
the instances it must keep, and the profiles the planner creates at all (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache

from inventory.domain.catalogue import GpuModel, MigProfile
from inventory.domain.mig_layout import MigInstance, MigLayoutError, place_instances
from inventory.domain.model import ClusterInventory
from inventory.domain.offer import Offer, OfferedResource, offer_of

#: A GPU's layout: None for MIG off (one whole GPU), else its instances.
Layout = tuple[MigInstance, ...] | None


def plannable_profiles(model: GpuModel) -> tuple[MigProfile, ...]:
    """The profiles the planner creates on ``model``: none with media extensions (one per GPU, for
    workloads that name them) and none as large as the GPU (MIG off serves that size, without MIG's
    overhead and in the one pool of whole GPUs)."""
    return tuple(
        p for p in model.profiles if not p.media_extensions and p.compute_slices < model.compute_slices_total
    )


def plannable_offer(cluster: ClusterInventory) -> Offer:
    """What admission may route pods to when planning is on: what exists, plus the profiles the
    planner may create on the MIG-capable models present (a pod waits for its layout instead of
    being refused or given a whole GPU because no GPU is carved into its size yet)."""
    existing = offer_of(cluster)
    seen = {(r.model.name, r.profile.name if r.profile else None): r for r in existing.resources}
    for model in {
        g.model.name: g.model for n in cluster.nodes for g in n.gpus if g.model.mig_capable
    }.values():
        price = cluster.prices.hourly.get(model.name)
        for profile in plannable_profiles(model):
            if (model.name, profile.name) not in seen:
                mig_price = cluster.prices.mig_instance(model, profile) if price is not None else None
                seen[(model.name, profile.name)] = OfferedResource(model, profile, mig_price)
    ordered = sorted(
        seen.values(),
        key=lambda r: (r.profile is not None, r.model.name, r.memory_gb, r.profile.name if r.profile else ""),
    )
    return Offer(resources=tuple(ordered), currency=existing.currency)


@cache
def candidate_layouts(model: GpuModel, kept: tuple[tuple[str, int], ...] = ()) -> tuple[Layout, ...]:
    """Every layout of ``model`` that keeps the instances ``kept`` (profile name, start) in place,
    one per distinct set of profiles, valid under NVIDIA's placement rules; MIG off first when
    nothing is kept. Enumerated slice by slice (8 memory slices, a few profiles each)."""
    fixed = tuple(MigInstance(profile=model.profile(name), start=start) for name, start in kept)
    used = frozenset(s for instance in fixed for s in instance.slices)
    found: dict[tuple[str, ...], tuple[MigInstance, ...]] = {}
    for added in _extensions(model, plannable_profiles(model), 0, used, fixed):
        key = tuple(sorted(i.profile.name for i in added))
        if key in found:
            continue
        try:  # the count and compute rules, checked by the one module that owns them
            place_instances(model, [i.profile.name for i in (*fixed, *added)])
        except MigLayoutError:
            continue
        found[key] = tuple(sorted((*fixed, *added), key=lambda i: i.start))
    # MIG on with no instance at all offers nothing: with nothing kept, MIG off is the empty choice.
    if not fixed:
        found.pop((), None)
    layouts: list[Layout] = [] if fixed else [None]
    layouts.extend(found.values())
    return tuple(layouts)


def _extensions(
    model: GpuModel,
    profiles: Sequence[MigProfile],
    slice_: int,
    used: frozenset[int],
    placed: Sequence[MigInstance],
) -> Iterator[tuple[MigInstance, ...]]:
    """Sets of instances that fit around ``placed`` from memory slice ``slice_`` on (each yielded once)."""
    if slice_ >= model.memory_slices_total:
        yield ()
        return
    yield from _extensions(model, profiles, slice_ + 1, used, placed)
    if slice_ in used:
        return
    compute = sum(i.profile.compute_slices for i in placed)
    counts = Counter(i.profile.name for i in placed)
    for profile in profiles:
        span = range(slice_, slice_ + profile.placement_size)
        if (
            slice_ not in profile.placement_starts
            or span.stop > model.memory_slices_total
            or any(s in used for s in span)
            or compute + profile.compute_slices > model.compute_slices_total
            or counts[profile.name] >= profile.max_instances
        ):
            continue
        instance = MigInstance(profile=profile, start=slice_)
        for rest in _extensions(model, profiles, span.stop, used | set(span), (*placed, instance)):
            yield (instance, *rest)


def describe(layout: Layout) -> str:
    """``MIG off``, ``MIG on, empty`` or the profiles, e.g. ``3g.40gb + 2 x 1g.20gb``."""
    if layout is None:
        return "MIG off"
    counts = Counter(i.profile.name for i in layout)
    if not counts:
        return "MIG on, empty"
    return " + ".join(
        f"{n} x {name}" if n > 1 else name for name, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
