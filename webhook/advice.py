"""Admission warnings: what a pod's owner should know about a pod that is admitted anyway.

The API server shows each warning to the client as it is (``kubectl`` prints ``Warning: ...``).
``admission.k8s.io/v1`` AdmissionResponse.warnings: "Limit warnings to 120 characters if possible.
Warnings over 256 characters and large numbers of warnings may be truncated." Every warning we give
is cut to 120 characters (:func:`brief`), and warnings are per resource or for at most a few
containers, never one per container of a large pod.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from inventory.domain.labels import MEMORY_GB, MIG_RESOURCE_PREFIX

#: The most characters of one warning (the ``admission.k8s.io/v1`` advice).
MAX_WARNING_CHARS = 120
#: A MIG profile's name states its memory: ``1g.10gb``, ``1g.10gb+me``, ``4g.71gb``.
_PROFILE_MEMORY = re.compile(r"\.(\d+)gb")


def brief(warning: str) -> str:
    """``warning``, cut to :data:`MAX_WARNING_CHARS` with an ellipsis when longer."""
    if len(warning) <= MAX_WARNING_CHARS:
        return warning
    return warning[: MAX_WARNING_CHARS - 1] + "…"


def mig_memory_gb(resource: str) -> int | None:
    """The memory of a MIG resource (``nvidia.com/mig-3g.40gb``: 40), None for any other resource."""
    if not resource.startswith(MIG_RESOURCE_PREFIX):
        return None
    match = _PROFILE_MEMORY.search(resource)
    return int(match.group(1)) if match else None


def mig_smaller_than_asked(total: Mapping[str, int], memory_gb: Decimal | None) -> list[str]:
    """A warning per MIG resource the pod will hold with less memory than ``gpu.kgm.io/memory-gb``.

    kgm never picks such an instance itself; the pod holds one because it names it (a container's
    resource, or the reservation it claims): the workload may run out of GPU memory.
    """
    if memory_gb is None:
        return []
    warnings = []
    for resource in sorted(total):
        memory = mig_memory_gb(resource)
        if memory is not None and memory < memory_gb:
            warnings.append(
                f"kgm: {resource} has {memory} GB, less than the {memory_gb} GB of {MEMORY_GB}"
            )
    return warnings
