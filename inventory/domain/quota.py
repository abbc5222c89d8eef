"""Team quotas in GPU-equivalents, GPU memory and money: what a pod counts, what a quota allows.

One unit across whole GPUs and MIG instances: a whole GPU is 1 GPU-equivalent, a MIG instance its
share of its GPU's compute slices (a 3g.40gb on an A100 or H100 is 3/7), the same share the price
table bills (:mod:`inventory.domain.prices`). Memory is the instance's (the profile's GB) or the
whole GPU's. Cost is the hourly price of what is held; a daily or monthly budget is judged on that
rate (24 and 730 hours), so admission can decide it from what is held now, before any bill exists.

Shares are :class:`~fractions.Fraction`: seven 1g instances are exactly one GPU, never 0.99999.
What a held pod counts is measured on its node's GPU model; a pod not placed yet (Pending, or at
admission) counts the most any model that offers its resource would make it count, so a quota is
never judged on less than the pod will hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any

from inventory.domain.catalogue import GpuModel, builtin_catalogue
from inventory.domain.labels import FULL_GPU_RESOURCE, TEAM
from inventory.domain.names import is_label_value
from inventory.domain.pods import TERMINAL_PHASES, container_gpus, pod_gpu_total
from inventory.domain.prices import PriceTable
from inventory.domain.quantity import QuantityError, quantity_value

HOURS_PER_DAY = 24
#: A month of run rate: 365 * 24 / 12 hours, as cloud bills count a month.
HOURS_PER_MONTH = 730
#: ResourceQuota lines that kgm reads as GPU-equivalents (``requests.`` is the only prefix Kubernetes
#: allows for extended resources; the bare name is accepted by the API server as the same thing).
RESOURCE_QUOTA_GPU_LINES = ("requests." + FULL_GPU_RESOURCE, FULL_GPU_RESOURCE)


class QuotaError(ValueError):
    """A quota object we cannot read; the message names the field."""


class Unit(StrEnum):
    """A quota's units, spelled as the GpuQuota's ``spec.limits`` keys."""

    GPU_EQUIVALENTS = "gpuEquivalents"
    MEMORY_GB = "memoryGB"
    COST_PER_HOUR = "costPerHour"
    COST_PER_DAY = "costPerDay"
    COST_PER_MONTH = "costPerMonth"


_WORDS = {
    Unit.GPU_EQUIVALENTS: "GPU-equivalents",
    Unit.MEMORY_GB: "GB of GPU memory",
    Unit.COST_PER_HOUR: "per hour",
    Unit.COST_PER_DAY: "per day",
    Unit.COST_PER_MONTH: "per month",
}
_COST_HOURS = {Unit.COST_PER_HOUR: 1, Unit.COST_PER_DAY: HOURS_PER_DAY, Unit.COST_PER_MONTH: HOURS_PER_MONTH}


@dataclass(frozen=True, slots=True)
class Measure:
    """What something holds, in the quota's three dimensions (cost as an hourly rate)."""

    gpu_equivalents: Fraction = Fraction(0)
    memory_gb: Decimal = Decimal(0)
    hourly: Decimal = Decimal(0)

    def __add__(self, other: Measure) -> Measure:
        return Measure(
            self.gpu_equivalents + other.gpu_equivalents,
            self.memory_gb + other.memory_gb,
            self.hourly + other.hourly,
        )

    def times(self, count: int) -> Measure:
        return Measure(self.gpu_equivalents * count, self.memory_gb * count, self.hourly * count)

    def value(self, unit: Unit) -> Fraction:
        """The measure in ``unit``, exactly (a Decimal is a Fraction without loss)."""
        if unit is Unit.GPU_EQUIVALENTS:
            return self.gpu_equivalents
        if unit is Unit.MEMORY_GB:
            return Fraction(self.memory_gb)
        return Fraction(self.hourly) * _COST_HOURS[unit]

    @property
    def empty(self) -> bool:
        return not (self.gpu_equivalents or self.memory_gb or self.hourly)


ZERO = Measure()


def unit_measure(resource: str, model: GpuModel, prices: PriceTable) -> Measure | None:
    """One unit of ``resource`` (``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>``) on a GPU of
    ``model``; None when the model has no such MIG profile. A model with no price costs 0."""
    price = prices.hourly.get(model.name)
    if resource == FULL_GPU_RESOURCE:
        return Measure(Fraction(1), Decimal(model.memory_gb), price or Decimal(0))
    for profile in model.profiles:
        if profile.resource_name == resource:
            share = Fraction(profile.compute_slices, model.compute_slices_total or 1)
            hourly = prices.mig_instance(model, profile) if price is not None else Decimal(0)
            return Measure(share, Decimal(profile.memory_gb), hourly)
    return None


def upper_measure(resource: str, models: Iterable[GpuModel], prices: PriceTable) -> Measure:
    """The most one unit of ``resource`` counts on any of ``models`` (each dimension on its own): what a
    pod not placed yet is judged on. A whole GPU is 1 GPU-equivalent whatever the model; a resource no
    model has counts by its name alone (a MIG profile's compute and memory), priced 0."""
    found = [m for m in (unit_measure(resource, model, prices) for model in models) if m is not None]
    if not found:
        return _named_only(resource)
    return Measure(
        max(m.gpu_equivalents for m in found),
        max(m.memory_gb for m in found),
        max(m.hourly for m in found),
    )


def _named_only(resource: str) -> Measure:
    """A resource none of the cluster's models offers: the most it counts on any model of the
    catalogue (its price unknown: 0), or 1 GPU-equivalent for a whole GPU."""
    if resource == FULL_GPU_RESOURCE:
        return Measure(Fraction(1))
    found = [
        m
        for m in (
            unit_measure(resource, model, PriceTable(hourly={})) for model in builtin_catalogue().models
        )
        if m is not None
    ]
    if not found:
        return ZERO
    return Measure(max(m.gpu_equivalents for m in found), max(m.memory_gb for m in found))


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Each limit is optional; a quota with none limits nothing."""

    gpu_equivalents: Decimal | None = None
    memory_gb: Decimal | None = None
    cost_per_hour: Decimal | None = None
    cost_per_day: Decimal | None = None
    cost_per_month: Decimal | None = None

    def items(self) -> list[tuple[Unit, Decimal]]:
        values = (
            (Unit.GPU_EQUIVALENTS, self.gpu_equivalents),
            (Unit.MEMORY_GB, self.memory_gb),
            (Unit.COST_PER_HOUR, self.cost_per_hour),
            (Unit.COST_PER_DAY, self.cost_per_day),
            (Unit.COST_PER_MONTH, self.cost_per_month),
        )
        return [(unit, limit) for unit, limit in values if limit is not None]


@dataclass(frozen=True, slots=True)
class Quota:
    """A GpuQuota, or the GPU lines of a ResourceQuota, and whose pods it counts: the pods of its
    namespace, or (``team``) the pods labelled ``gpu.kgm.io/team=<team>`` in any namespace."""

    kind: str
    namespace: str
    name: str
    limits: QuotaLimits
    team: str | None = None
    #: For a ResourceQuota: the line it was read from (``requests.nvidia.com/gpu``).
    line: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def scope(self) -> str:
        """Whose pods, in words: ``team nlp`` or ``namespace ml``."""
        return f"team {self.team}" if self.team is not None else f"namespace {self.namespace}"

    def applies(self, namespace: str, team: str | None) -> bool:
        return team == self.team if self.team is not None else namespace == self.namespace


@dataclass(frozen=True, slots=True)
class Holding:
    """A pod (bound or pending), a reservation or an admission just made: whose it is, what it counts."""

    namespace: str
    team: str | None
    measure: Measure
    #: How many pods, reservations or admissions it stands for (the pods of one team and namespace are
    #: summed into one holding).
    holders: int = 1


@dataclass(frozen=True, slots=True)
class QuotaAsk:
    """A pod at admission, as it will be after the webhook's rewrite: whose it is and what it holds."""

    #: The admission's id (the review's uid): the pod carries it, so its hold is dropped once it shows up.
    key: str
    namespace: str
    team: str | None
    resources: Mapping[str, int]
    #: A dry run is judged but takes nothing.
    dry_run: bool = False
    #: The reservation the pod claims: what it holds is counted already, as the reservation.
    reservation: str | None = None
    #: The admission the pod says judged it already (its ``gpu.kgm.io/quota-admission``): a webhook
    #: reinvocation, which must not count the pod twice while that admission's hold stands.
    judged_as: str | None = None


#: Judges an ask and, when it fits (and is no dry run), holds it: the refusals, empty when admitted.
QuotaChecker = Callable[[QuotaAsk], "list[Refusal]"]


def usage(quota: Quota, holdings: Iterable[Holding]) -> Measure:
    total = ZERO
    for holding in holdings:
        if quota.applies(holding.namespace, holding.team):
            total = total + holding.measure
    return total


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a pod does not fit one quota, in one unit."""

    quota: Quota
    unit: Unit
    limit: Fraction
    used: Fraction
    asked: Fraction
    currency: str = "USD"

    @property
    def message(self) -> str:
        quota = self.quota
        where = f"{quota.kind} {quota.namespace}/{quota.name}" + (f", {quota.line}" if quota.line else "")
        if self.unit in _COST_HOURS:
            words = f"{self.currency} {_WORDS[self.unit]}"
            return (
                f"{quota.scope}: {_money(self.used)} of {_money(self.limit)} {words} used, "
                f"this pod needs {_money(self.asked)} ({where})"
            )
        return (
            f"{quota.scope}: {_number(self.used)} of {_number(self.limit)} {_WORDS[self.unit]} used, "
            f"this pod needs {_number(self.asked)} ({where})"
        )


def decide(
    quotas: Iterable[Quota],
    *,
    namespace: str,
    team: str | None,
    asked: Measure,
    holdings: Iterable[Holding],
    currency: str = "USD",
) -> list[Refusal]:
    """Every limit of every quota over ``namespace``/``team`` that ``asked`` would take past its limit
    (empty: the pod fits). A unit the pod asks none of never refuses it, even over a lowered limit."""
    applying = [q for q in quotas if q.applies(namespace, team) and q.limits.items()]
    if not applying or asked.empty:
        return []
    held = list(holdings)
    refusals = []
    for quota in applying:
        used = usage(quota, held)
        for unit, limit in quota.limits.items():
            need = asked.value(unit)
            if need > 0 and used.value(unit) + need > limit:
                refusals.append(Refusal(quota, unit, Fraction(limit), used.value(unit), need, currency))
    return refusals


def _number(value: Fraction) -> str:
    """7.43, 8, 0.5: two decimals at most, no trailing zeros (a share of 3/7 reads 0.43)."""
    text = f"{_decimal(value):.2f}"
    return text.rstrip("0").rstrip(".")


def _money(value: Fraction) -> str:
    return f"{_decimal(value):.2f}"


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def number(value: Fraction | Decimal) -> float:
    """A figure for JSON and metrics."""
    return float(value)


# -- Reading the objects --------------------------------------------------------------------------


def pod_team(pod: Mapping[str, Any]) -> str | None:
    metadata = pod.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    team = labels.get(TEAM) if isinstance(labels, Mapping) else None
    return team if isinstance(team, str) and team else None


@dataclass(frozen=True, slots=True)
class PodClaim:
    """The GPU resources a non-terminal pod counts against quotas, bound or not (as a ResourceQuota
    counts every pod that is not Succeeded or Failed)."""

    uid: str
    namespace: str
    team: str | None
    resources: Mapping[str, int]
    node: str | None
    #: The reservation the pod claims (``gpu.kgm.io/allocation-id``): no longer counted on its own.
    reservation: str | None = None
    #: The admission that let it in (the webhook's annotation): no longer counted on its own.
    admission: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


def pod_claim(pod: Mapping[str, Any], *, admission_key: str, reservation_key: str) -> PodClaim | None:
    """What a pod from the watch counts, or None (terminal, or no GPU resources)."""
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return None
    resources = pod_gpu_total(container_gpus(pod))
    if not resources:
        return None
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    annotations = annotations if isinstance(annotations, Mapping) else {}
    node = (pod.get("spec") or {}).get("nodeName")
    return PodClaim(
        uid=str(metadata.get("uid", "")),
        namespace=str(metadata.get("namespace", "")),
        team=pod_team(pod),
        resources=resources,
        node=str(node) if node else None,
        reservation=_string(annotations.get(reservation_key)),
        admission=_string(annotations.get(admission_key)),
    )


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_gpuquota(obj: Mapping[str, Any]) -> Quota:
    """A ``GpuQuota`` object (``gpu.kgm.io/v1alpha1``) as a :class:`Quota`; QuotaError naming the field."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise QuotaError("spec must be an object")
    team = spec.get("team")
    if team is not None and not (isinstance(team, str) and is_label_value(team) and team):
        raise QuotaError(f"spec.team={team!r} must be a label value")
    limits = spec.get("limits", {})
    if not isinstance(limits, Mapping):
        raise QuotaError("spec.limits must be an object")
    parsed = {unit: _limit(limits.get(unit.value), f"spec.limits.{unit.value}") for unit in Unit}
    return Quota(
        kind="GpuQuota",
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        team=team,
        limits=QuotaLimits(
            gpu_equivalents=parsed[Unit.GPU_EQUIVALENTS],
            memory_gb=parsed[Unit.MEMORY_GB],
            cost_per_hour=parsed[Unit.COST_PER_HOUR],
            cost_per_day=parsed[Unit.COST_PER_DAY],
            cost_per_month=parsed[Unit.COST_PER_MONTH],
        ),
    )


def parse_resourcequota(obj: Mapping[str, Any]) -> Quota | None:
    """The GPU line of a ResourceQuota (``spec.hard``) as a GPU-equivalents limit over its namespace, or
    None: no such line, or a quota with scopes (it counts only some pods; kgm leaves it to Kubernetes
    rather than apply it to all). With both lines the lower wins."""
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping) or spec.get("scopes") or spec.get("scopeSelector"):
        return None
    hard = spec.get("hard") or {}
    if not isinstance(hard, Mapping):
        return None
    found: list[tuple[Decimal, str]] = []
    for line in RESOURCE_QUOTA_GPU_LINES:
        if line in hard:
            try:
                found.append((quantity_value(hard[line]), line))
            except QuantityError:
                continue
    if not found:
        return None
    limit, line = min(found)
    metadata = obj.get("metadata") or {}
    return Quota(
        kind="ResourceQuota",
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        limits=QuotaLimits(gpu_equivalents=limit),
        line=line,
    )


def _limit(value: object, path: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise QuotaError(f"{path} must be a number, not {value!r}")
    try:
        limit = quantity_value(value)
    except QuantityError as error:
        raise QuotaError(f"{path}: {error}") from error
    if limit < 0:
        raise QuotaError(f"{path} must be at least 0, not {value!r}")
    return limit


#: The namespace cluster-file quotas are shown under (they are no Kubernetes objects).
CLUSTER_FILE = "cluster-file"


@dataclass(frozen=True, slots=True)
class TeamQuota:
    """A team's quota in a cluster file, and its share of the simulated workload (``kgm simulate``)."""

    quota: Quota
    share: int = 1


def parse_team_quota(entry: object, where: str) -> TeamQuota:
    """``{team: nlp, share: 2, gpuEquivalents: 8, memoryGB: 320, costPerHour: 20, ...}``; QuotaError
    naming the field."""
    if not isinstance(entry, Mapping):
        raise QuotaError(f"{where}: a quota is a mapping with a 'team' and its limits")
    team = entry.get("team")
    if not (isinstance(team, str) and team and is_label_value(team)):
        raise QuotaError(f"{where}: 'team' must be a label value, not {team!r}")
    share = entry.get("share", 1)
    if not isinstance(share, int) or isinstance(share, bool) or share < 0:
        raise QuotaError(f"{where}: 'share' must be a whole number >= 0, not {share!r}")
    unknown = sorted(set(entry) - {"team", "share"} - {unit.value for unit in Unit})
    if unknown:
        raise QuotaError(f"{where}: unknown keys {', '.join(map(str, unknown))}; limits: {', '.join(Unit)}")
    parsed = {unit: _limit(entry.get(unit.value), f"{where}.{unit.value}") for unit in Unit}
    limits = QuotaLimits(
        gpu_equivalents=parsed[Unit.GPU_EQUIVALENTS],
        memory_gb=parsed[Unit.MEMORY_GB],
        cost_per_hour=parsed[Unit.COST_PER_HOUR],
        cost_per_day=parsed[Unit.COST_PER_DAY],
        cost_per_month=parsed[Unit.COST_PER_MONTH],
    )
    return TeamQuota(
        Quota(kind="GpuQuota", namespace=CLUSTER_FILE, name=team, limits=limits, team=team), share
    )
