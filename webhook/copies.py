"""An edited copy of a pod kgm already mutated: what its user first asked for.

``kubectl get pod -o yaml``, edit, ``kubectl create``: the copy carries kgm's rewrite (a single GPU
already turned into ``nvidia.com/mig-1g.10gb``) and kgm's annotations. Judged as it stands, the rewrite
would read as the user's own choice: ``original-request`` would record the MIG instance, and a larger
``memory-gb`` written into the copy would be ignored.

The rule: a container is read as what it first asked for when the pod still carries that ask and the
container still holds what kgm made of it, that is when

- ``gpu.kgm.io/original-request`` names the container (same kind, same name) with exactly one whole
  GPU (``{"nvidia.com/gpu": "1"}``: the only ask kgm ever rewrites), and
- the container now holds exactly one MIG instance, and
- the pod's ``gpu.kgm.io/gpu-profile`` label names that instance (or is ``mixed``, as kgm labels a pod
  with several kinds of GPU resource), as kgm labelled the pod it produced.

Such a container is judged afresh as one whole GPU (the MIG instance then follows the copy's
``memory-gb``, ``use-mig`` and workload type), and ``original-request`` keeps its first ask. A
container whose GPU request the user edited (another MIG instance than the label names, a count, a
whole GPU) is the user's new ask, recorded as such; so is a container the original does not name.
An ``original-request`` that is not kgm's JSON is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import orjson

from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    GPU_PROFILE,
    MIG_RESOURCE_PREFIX,
    ORIGINAL_REQUEST,
    RESOURCE_PREFIX,
)
from inventory.domain.pods import ContainerGpus

_ONE_WHOLE_GPU = {FULL_GPU_RESOURCE: "1"}


def first_asks(
    containers: tuple[ContainerGpus, ...], annotations: Mapping[str, str], labels: Mapping[str, str]
) -> tuple[ContainerGpus, ...]:
    """``containers`` with each container kgm rewrote read back as its first ask (see the module)."""
    original = _original(annotations.get(ORIGINAL_REQUEST))
    if not original:
        return containers
    profile = labels.get(GPU_PROFILE)
    asked: list[ContainerGpus] = []
    for container in containers:
        kind = original.get(container.kind)
        first = kind.get(container.name) if isinstance(kind, dict) else None
        if first == _ONE_WHOLE_GPU and _rewritten(container, profile):
            asked.append(replace(container, resources={FULL_GPU_RESOURCE: 1}))
        else:
            asked.append(container)
    return tuple(asked)


def _rewritten(container: ContainerGpus, profile: str | None) -> bool:
    """Whether the container holds one MIG instance, the one kgm's label says it gave the pod."""
    if len(container.resources) != 1:
        return False
    ((name, count),) = container.resources.items()
    if count != 1 or not name.startswith(MIG_RESOURCE_PREFIX):
        return False
    return profile in (name.removeprefix(RESOURCE_PREFIX), "mixed")


def _original(text: str | None) -> dict[str, object] | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
