"""What a pod asks for: GPU resources per container, the pod-level total, and the user's annotations.

Shared by admission (which rewrites the request) and placement (which must find room for it), so
both read a pod the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, Literal

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
from inventory.domain.quantity import QuantityError, quantity_value

#: Pod phases after which a pod holds nothing: its GPUs are free again.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

#: Far more of one GPU resource than any node holds (the largest have 8 to 16 GPUs of at most 7 MIG
#: instances each), yet small enough that sums over a pod's containers stay far from int64 (what the
#: ledger stores). A container asking for more is a mistake or an attack, and is refused as such.
MAX_GPU_COUNT: Final = 65_536

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


class PodError(ValueError):
    """A pod we cannot read: a field of the wrong type. The message names the field (a bad request)."""


class InvalidPodError(PodError):
    """A readable pod that Kubernetes refuses: a GPU count that is not a quantity, not a whole
    number, negative, or more than any node holds (an invalid value, as the API server's 422)."""


class TooManyGpuContainersError(InvalidPodError):
    """More containers hold GPU resources than the caller can take (``most``)."""


def container_gpus(
    pod: Mapping[str, Any], *, strict: bool = False, most: int | None = None
) -> tuple[ContainerGpus, ...]:
    """Every container and init container of ``pod`` that holds a GPU resource, in pod order.

    Counts are Kubernetes quantities (``"1"``, ``"1000m"``, ``"1e0"`` are one GPU). ``strict`` (a pod
    from a caller: admission, the extender) raises :class:`PodError` naming the first field we cannot
    read or :class:`InvalidPodError` for a count Kubernetes refuses; otherwise (pods from the watch,
    which the API server has validated) such a field or count is left out. Past ``most`` GPU
    containers, reading stops with :class:`TooManyGpuContainersError`.
    """
    spec = mapping_at(pod.get("spec"), "spec", strict=strict)
    if spec is None:
        return ()
    found: list[ContainerGpus] = []
    for kind in ("initContainers", "containers"):
        containers = list_at(spec.get(kind), f"spec.{kind}", strict=strict)
        for index, item in enumerate(containers):
            path = f"spec.{kind}[{index}]"
            container = mapping_at(item, path, strict=strict)
            if container is None:
                continue
            resources = _gpu_counts(container.get("resources"), f"{path}.resources", strict)
            if resources and most is not None and len(found) == most:
                raise TooManyGpuContainersError(f"spec: more than {most} containers hold GPU resources")
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


def mapping_at(value: object, path: str, *, strict: bool = True) -> Mapping[str, Any] | None:
    """``value`` if it is a JSON object; None if absent (or, not strict, of another type)."""
    if value is None or isinstance(value, Mapping):
        return value
    if strict:
        raise PodError(f"{path} must be an object, not {_json_type(value)}")
    return None


def list_at(value: object, path: str, *, strict: bool = True) -> list[Any]:
    """``value`` if it is a JSON array; empty if absent (or, not strict, of another type)."""
    if isinstance(value, list):
        return value
    if value is not None and strict:
        raise PodError(f"{path} must be an array, not {_json_type(value)}")
    return []


def strings_at(value: object, path: str) -> Mapping[str, str]:
    """``value`` if it is a JSON object of strings (labels, annotations, a node selector); empty if absent."""
    found = mapping_at(value, path)
    if found is None:
        return {}
    for key, item in found.items():
        if not isinstance(item, str):
            raise PodError(f"{path}[{key}] must be a string, not {_json_type(item)}")
    return found


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


def _gpu_counts(resources: object, path: str, strict: bool) -> dict[str, int]:
    found = mapping_at(resources, path, strict=strict)
    if found is None:
        return {}
    counts: dict[str, int] = {}
    # Limits win: extended resources must be set there; requests are defaulted from them.
    for section in ("limits", "requests"):
        values = mapping_at(found.get(section), f"{path}.{section}", strict=strict)
        if values is None:
            continue
        for name, value in values.items():
            if is_gpu_resource(name):
                count = gpu_count(value, f"{path}.{section}[{name}]", strict=strict)
                if count:
                    counts.setdefault(name, count)
    return counts


def gpu_count(value: object, path: str, *, strict: bool = True) -> int | None:
    """A GPU resource's count: a whole-number quantity from 0 to :data:`MAX_GPU_COUNT`.

    Kubernetes refuses fractional extended resources (``must be an integer``) and negative ones;
    not strict, such a value is None.
    """
    if type(value) is str and 0 < len(value) <= 4 and value.isascii() and value.isdigit():
        return int(value)  # the usual "1" or "8": no Decimal (a pod may carry thousands of containers)
    try:
        quantity = quantity_value(value)
    except QuantityError as error:
        if strict:
            raise InvalidPodError(f"{path}: {error}") from error
        return None
    problem = None
    if quantity < 0:
        problem = "must be greater than or equal to 0"
    elif quantity > MAX_GPU_COUNT:
        problem = f"is more than any node holds (at most {MAX_GPU_COUNT})"
    elif quantity != quantity.to_integral_value():
        problem = "must be an integer (extended resources cannot be fractional)"
    if problem is None:
        return int(quantity)
    if strict:
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:37] + "...")
        raise InvalidPodError(f"{path}: Invalid value: {shown}: {problem}")
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
