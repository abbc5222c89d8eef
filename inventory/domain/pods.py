"""What a pod asks for: GPU resources per container, the pod-level total, and the user's annotations.

Shared by admission (which rewrites the request) and placement (which must find room for it), so
both read a pod the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal

from inventory.domain.labels import (
    FULL_GPU_RESOURCE,
    MEMORY_GB,
    MIG_RESOURCE_PREFIX,
    TEAM,
    USE_MIG,
    USER,
    WORKLOAD_TYPE,
)
from inventory.domain.names import is_label_value

#: Pod phases after which a pod holds nothing: its GPUs are free again.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

_INTEGER = re.compile(r"^\+?[0-9]+$")

ContainerKind = Literal["containers", "initContainers"]


class WorkloadType(StrEnum):
    TRAINING = "Training"
    INFERENCE = "Inference"
    DEVELOPMENT = "Development"


def is_gpu_resource(name: str) -> bool:
    return name == FULL_GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


@dataclass(frozen=True, slots=True)
class ContainerGpus:
    """The GPU resources of one container (limits, which Kubernetes requires equal to requests)."""

    kind: ContainerKind
    index: int
    name: str
    resources: Mapping[str, int]
    #: An init container with ``restartPolicy: Always`` keeps running beside the app containers.
    sidecar: bool = False


def container_gpus(pod: Mapping[str, Any]) -> tuple[ContainerGpus, ...]:
    """Every container and init container of ``pod`` that holds a GPU resource, in pod order.

    A count that is not a whole number is left out: the API server rejects such a pod anyway, and
    admission must not fail on it first.
    """
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return ()
    found: list[ContainerGpus] = []
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, Mapping):
                continue
            resources = _gpu_counts(container.get("resources"))
            if resources:
                found.append(
                    ContainerGpus(
                        kind=kind,
                        index=index,
                        name=str(container.get("name", "")),
                        resources=resources,
                        sidecar=kind == "initContainers" and container.get("restartPolicy") == "Always",
                    )
                )
    return tuple(found)


def _gpu_counts(resources: object) -> dict[str, int]:
    if not isinstance(resources, Mapping):
        return {}
    counts: dict[str, int] = {}
    # Limits first: extended resources must be set there; requests are defaulted from them.
    for section in ("requests", "limits"):
        values = resources.get(section)
        if not isinstance(values, Mapping):
            continue
        for name, value in values.items():
            count = parse_count(value)
            if is_gpu_resource(name) and count is not None and count > 0:
                counts[name] = count
    return counts


def parse_count(value: object) -> int | None:
    """A whole-number quantity (``"2"`` or ``2``), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    return None


def pod_gpu_total(containers: Iterable[ContainerGpus]) -> dict[str, int]:
    """GPU resources the pod holds, by Kubernetes' rule for effective pod requests.

    Init containers run one at a time before the app containers, and the kubelet hands their devices
    on, so the pod holds the larger of (the biggest init container plus the sidecars started before
    it) and (all app containers plus all sidecars).
    """
    sidecars: dict[str, int] = {}
    peak: dict[str, int] = {}
    apps: dict[str, int] = {}
    for container in containers:
        if container.kind == "containers":
            _add(apps, container.resources)
        elif container.sidecar:
            _add(sidecars, container.resources)
        else:
            for name, count in container.resources.items():
                peak[name] = max(peak.get(name, 0), count + sidecars.get(name, 0))
    _add(apps, sidecars)
    names = set(peak) | set(apps)
    return {name: max(peak.get(name, 0), apps.get(name, 0)) for name in sorted(names)}


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, count in more.items():
        total[name] = total.get(name, 0) + count


@dataclass(frozen=True, slots=True)
class GpuIntent:
    """What the user told us through annotations."""

    memory_gb: Decimal | None = None
    workload_type: WorkloadType = WorkloadType.DEVELOPMENT
    use_mig: bool | None = None
    team: str | None = None
    user: str | None = None


def wants_mig(*, use_mig: bool | None, memory_gb: Decimal | None, workload_type: str) -> bool:
    """Whether a single-GPU request is for a MIG instance: asked for (``use-mig: true``), or a memory
    size given, ``use-mig`` not ``false`` and the workload not Training. Admission and reservations
    decide by this one rule."""
    return use_mig is True or (
        memory_gb is not None and use_mig is not False and workload_type != WorkloadType.TRAINING
    )


class IntentError(ValueError):
    """Annotations with values we cannot act on; ``problems`` names each one and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_intent(annotations: Mapping[str, object]) -> GpuIntent:
    problems: list[str] = []
    memory = _memory_gb(annotations.get(MEMORY_GB), problems)
    workload = _workload_type(annotations.get(WORKLOAD_TYPE), problems)
    use_mig = _use_mig(annotations.get(USE_MIG), problems)
    team = annotations.get(TEAM)
    if team is not None and not (isinstance(team, str) and is_label_value(team)):
        problems.append(
            f"{TEAM}={team!r} must be a valid label value: at most 63 characters, letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
        team = None
    user = annotations.get(USER)
    if problems:
        raise IntentError(problems)
    return GpuIntent(
        memory_gb=memory,
        workload_type=workload,
        use_mig=use_mig,
        team=team if isinstance(team, str) else None,
        user=user if isinstance(user, str) and user else None,
    )


def _memory_gb(value: object, problems: list[str]) -> Decimal | None:
    if value is None:
        return None
    try:
        memory = Decimal(str(value).strip())
    except InvalidOperation:
        memory = Decimal(-1)
    if not memory.is_finite() or memory <= 0:
        problems.append(f'{MEMORY_GB}={value!r} must be a positive number of gigabytes, such as "20"')
        return None
    return memory


def _workload_type(value: object, problems: list[str]) -> WorkloadType:
    if value is None:
        return WorkloadType.DEVELOPMENT
    for workload in WorkloadType:
        if isinstance(value, str) and value.strip().lower() == workload.value.lower():
            return workload
    allowed = ", ".join(w.value for w in WorkloadType)
    problems.append(f"{WORKLOAD_TYPE}={value!r} is not a workload type; allowed: {allowed}")
    return WorkloadType.DEVELOPMENT


def _use_mig(value: object, problems: list[str]) -> bool | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    problems.append(f'{USE_MIG}={value!r} must be "true" or "false"')
    return None
