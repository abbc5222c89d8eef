"""What each replica knows about quotas and what they count: GpuQuotas and ResourceQuota GPU lines (from
their watches), every non-terminal GPU pod (from the pod watch, bound or not), open reservations (from
the ledger), and the admissions this replica made a moment ago.

Admission decides against all of it in one step under one lock (:meth:`QuotaBook.admit`): of two pods
admitted at once, the second sees the first's hold, so they cannot both take the last unit. A hold is
kept, like kube-scheduler's assumed pods, until its pod shows up in the watch (it carries the
admission's id in ``gpu.kgm.io/quota-admission``) or ``assume_ttl_s`` passes (the API server refused
the pod after us, or its creation failed). Holds are this replica's: with several replicas behind the
webhook's Service, two admissions on different replicas within the watch's delay (milliseconds) could
both take a last unit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inventory.domain.allocation import Allocation, Status
from inventory.domain.catalogue import Catalogue, CatalogueError, GpuModel
from inventory.domain.labels import ALLOCATION_ID, QUOTA_ADMISSION
from inventory.domain.model import NodeName
from inventory.domain.offer import Offer
from inventory.domain.prices import PriceTable
from inventory.domain.quota import (
    ZERO,
    Holding,
    Measure,
    PodClaim,
    Quota,
    QuotaAsk,
    QuotaError,
    Refusal,
    decide,
    parse_gpuquota,
    parse_resourcequota,
    pod_claim,
    unit_measure,
    upper_measure,
    usage,
)
from inventory.domain.snapshot import InventorySnapshot

QuotaKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Assumed:
    ask: QuotaAsk
    measure: Measure
    expires_at: float


@dataclass(frozen=True, slots=True)
class QuotaView:
    """A quota and what it counts now (for the REST API, metrics and the GpuQuota's status)."""

    quota: Quota
    used: Measure
    #: Pods, reservations and fresh admissions counted.
    holders: int
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class BadQuota:
    """A GpuQuota that cannot be read: it limits nothing, and its status says why."""

    namespace: str
    name: str
    message: str
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """Every quota with its use, and the GpuQuotas that cannot be read (the REST API's answer)."""

    quotas: list[QuotaView]
    invalid: list[BadQuota]
    currency: str = "USD"


class QuotaBook:
    """Thread-safe: watch threads write, admissions and readers take the lock briefly."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], InventorySnapshot],
        offer: Callable[[], Offer],
        prices: PriceTable,
        catalogue: Catalogue,
        reservations: Callable[[], Iterable[Allocation]] = lambda: (),
        assume_ttl_s: float = 30.0,
        reservations_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``reservations``: the open allocations of the ledger (read at most every ``reservations_ttl_s``;
        reservations are made through the API, seconds apart, not on admission's path)."""
        self._snapshot = snapshot
        self._offer = offer
        self._prices = prices
        self._catalogue = catalogue
        self._reservations = reservations
        self._assume_ttl_s = assume_ttl_s
        self._reservations_ttl_s = reservations_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._gpuquotas: dict[QuotaKey, Quota] = {}
        self._generations: dict[QuotaKey, int | None] = {}
        self._bad: dict[QuotaKey, BadQuota] = {}
        self._resourcequotas: dict[QuotaKey, Quota] = {}
        self._pods: dict[str, PodClaim] = {}
        self._assumed: dict[str, _Assumed] = {}
        self._reserved: tuple[Allocation, ...] = ()
        self._reserved_at: float | None = None
        # What the pods count, summed per (namespace, team): recomputed after a pod's claim changed or
        # the offer did (a pending pod counts on what is offered), not for each admission.
        self._pod_totals: dict[tuple[str, str | None], tuple[Measure, int]] | None = None
        self._totals_offer: Offer | None = None
        self._units: dict[tuple[str, str | None], Measure] = {}
        self._units_offer: Offer | None = None

    # -- GpuQuotas and ResourceQuotas (reflector callbacks) ---------------------------------------

    def replace_gpuquotas(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        with self._lock:
            self._gpuquotas, self._bad, self._generations = {}, {}, {}
            for obj in items:
                self._put_gpuquota(obj)

    def apply_gpuquota(self, event_type: str, obj: Mapping[str, Any]) -> None:
        with self._lock:
            if event_type == "DELETED":
                key = _key("GpuQuota", obj)
                self._gpuquotas.pop(key, None)
                self._bad.pop(key, None)
                self._generations.pop(key, None)
            else:
                self._put_gpuquota(obj)

    def replace_quotas(self, quotas: Iterable[Quota]) -> None:
        """Quotas that are no objects (a cluster file's, in ``kgm simulate``), in place of the GpuQuotas."""
        with self._lock:
            self._gpuquotas = {q.key: q for q in quotas}
            self._bad, self._generations = {}, {}

    def _put_gpuquota(self, obj: Mapping[str, Any]) -> None:
        key = _key("GpuQuota", obj)
        generation = (obj.get("metadata") or {}).get("generation")
        self._generations[key] = generation if isinstance(generation, int) else None
        try:
            self._gpuquotas[key] = parse_gpuquota(obj)
            self._bad.pop(key, None)
        except QuotaError as error:
            self._gpuquotas.pop(key, None)
            self._bad[key] = BadQuota(key[1], key[2], str(error), self._generations[key])

    def replace_resourcequotas(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        parsed = [q for q in map(parse_resourcequota, items) if q is not None]
        with self._lock:
            self._resourcequotas = {q.key: q for q in parsed}

    def apply_resourcequota(self, event_type: str, obj: Mapping[str, Any]) -> None:
        quota = None if event_type == "DELETED" else parse_resourcequota(obj)
        with self._lock:
            self._resourcequotas.pop(_key("ResourceQuota", obj), None)
            if quota is not None:
                self._resourcequotas[quota.key] = quota

    # -- Pods (a listener of the cache's pod watch) -----------------------------------------------

    def replace_pods(self, items: Iterable[Mapping[str, Any]], resource_version: str = "") -> None:
        claims = [c for c in map(_claim, items) if c is not None]
        with self._lock:
            self._pods = {c.uid: c for c in claims}
            self._pod_totals = None
            for claim in claims:
                if claim.admission is not None:
                    self._assumed.pop(claim.admission, None)

    def apply_pod(self, event_type: str, obj: Mapping[str, Any]) -> None:
        claim = None if event_type == "DELETED" else _claim(obj)
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        with self._lock:
            previous = self._pods.pop(uid, None)
            if previous != claim:  # most events change a pod's status only: what it counts stays
                self._pod_totals = None
            if claim is not None:
                self._pods[uid] = claim
                if claim.admission is not None:
                    self._assumed.pop(claim.admission, None)  # the pod counts itself from now on

    # -- Admission ---------------------------------------------------------------------------------

    def admit(self, ask: QuotaAsk) -> list[Refusal]:
        """Judge ``ask`` against every quota over it and, when it fits and is no dry run, hold what it
        asks until its pod shows up (or ``assume_ttl_s``): check and hold are one step under the lock."""
        with self._lock:
            if not self._quotas_over(ask.namespace, ask.team):
                return []  # the usual case, at no cost: no quota counts this pod
        offer = self._offer()
        snapshot = self._snapshot()
        reserved = self._open_reservations()
        with self._lock:
            asked = ZERO if ask.reservation is not None else self._asked(ask.resources, offer)
            self._expire()
            earlier = self._assumed.get(ask.judged_as) if ask.judged_as is not None else None
            if ask.key in self._assumed or (earlier is not None and earlier.ask.namespace == ask.namespace):
                return []  # judged and held already (a reinvocation of the same admission)
            quotas = self._quotas_over(ask.namespace, ask.team)
            if not quotas:
                return []

            def counted(namespace: str, team: str | None) -> bool:  # only what these quotas count is measured
                return any(q.applies(namespace, team) for q in quotas)

            holdings = self._holdings(snapshot, offer, reserved, counted)
            refusals = decide(
                quotas,
                namespace=ask.namespace,
                team=ask.team,
                asked=asked,
                holdings=holdings,
                currency=self._prices.currency,
            )
            if not refusals and not ask.dry_run and not asked.empty:
                self._assumed[ask.key] = _Assumed(ask, asked, self._clock() + self._assume_ttl_s)
            return refusals

    def _quotas_over(self, namespace: str, team: str | None) -> list[Quota]:
        """Under the lock."""
        return [
            q
            for q in (*self._gpuquotas.values(), *self._resourcequotas.values())
            if q.applies(namespace, team)
        ]

    def reservations_changed(self, *_: object) -> None:
        """A reservation was recorded or released: the next judgement reads the ledger again."""
        self._reserved_at = None

    def __call__(self, ask: QuotaAsk) -> list[Refusal]:
        """The book as admission's checker: :meth:`admit`."""
        return self.admit(ask)

    def active(self) -> bool:
        """Whether any quota is known: without one, admission need not even read the pod for quotas."""
        return bool(self._gpuquotas or self._resourcequotas)

    def forget(self, key: str) -> None:
        """Drop an admission's hold (the pod was refused after all)."""
        with self._lock:
            self._assumed.pop(key, None)

    # -- Readers -----------------------------------------------------------------------------------

    def views(self) -> list[QuotaView]:
        """Every quota with what it counts now, GpuQuotas first, by namespace and name."""
        offer, snapshot, reserved = self._offer(), self._snapshot(), self._open_reservations()
        with self._lock:
            self._expire()
            quotas = sorted(self._gpuquotas.values(), key=lambda q: q.key) + sorted(
                self._resourcequotas.values(), key=lambda q: q.key
            )
            holdings = self._holdings(snapshot, offer, reserved)
            generations = dict(self._generations)
        views = []
        for quota in quotas:
            counted = [h for h in holdings if quota.applies(h.namespace, h.team)]
            holders = sum(h.holders for h in counted)
            views.append(QuotaView(quota, usage(quota, counted), holders, generations.get(quota.key)))
        return views

    @property
    def currency(self) -> str:
        return self._prices.currency

    def report(self) -> QuotaReport:
        return QuotaReport(self.views(), self.bad(), self._prices.currency)

    def bad(self) -> list[BadQuota]:
        with self._lock:
            return sorted(self._bad.values(), key=lambda b: (b.namespace, b.name))

    # -- Inside the lock ---------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self._clock()
        for key in [key for key, held in self._assumed.items() if held.expires_at <= now]:
            del self._assumed[key]

    def _holdings(
        self,
        snapshot: InventorySnapshot,
        offer: Offer,
        reserved: tuple[Allocation, ...],
        counted: Callable[[str, str | None], bool] = lambda namespace, team: True,
    ) -> list[Holding]:
        claimed = {c.reservation for c in self._pods.values() if c.reservation is not None}
        if self._pod_totals is None or self._totals_offer is not offer:
            totals: dict[tuple[str, str | None], tuple[Measure, int]] = {}
            for c in self._pods.values():
                measure, count = totals.get((c.namespace, c.team), (ZERO, 0))
                held = self._held(c.resources, c.node, snapshot, offer)
                totals[(c.namespace, c.team)] = (measure + held, count + 1)
            self._pod_totals, self._totals_offer = totals, offer
        holdings = [
            Holding(namespace, team, measure, count)
            for (namespace, team), (measure, count) in self._pod_totals.items()
            if counted(namespace, team)
        ]
        holdings += [
            Holding(a.namespace, a.team or a.namespace, self._reservation_measure(a, offer))
            for a in reserved
            if a.id not in claimed and counted(a.namespace, a.team or a.namespace)
        ]
        holdings += [
            Holding(held.ask.namespace, held.ask.team, held.measure) for held in self._assumed.values()
        ]
        return holdings

    # -- Measures ----------------------------------------------------------------------------------

    def _asked(self, resources: Mapping[str, int], offer: Offer) -> Measure:
        total = ZERO
        for resource, count in resources.items():
            total = total + self._upper(resource, offer).times(count)
        return total

    def _upper(self, resource: str, offer: Offer) -> Measure:
        if self._units_offer is not offer:  # what a pending pod counts follows the offer
            self._units = {key: m for key, m in self._units.items() if key[1] is not None}
            self._units_offer = offer
        found = self._units.get((resource, None))
        if found is None:
            models = {r.model.name: r.model for r in offer.named(resource)}
            found = self._units[(resource, None)] = upper_measure(resource, models.values(), self._prices)
        return found

    def _held(
        self, resources: Mapping[str, int], node: str | None, snapshot: InventorySnapshot, offer: Offer
    ) -> Measure:
        total = ZERO
        state = snapshot.states.get(NodeName(node)) if node else None
        models = {r: m for r, m, _ in state.shape.resources} if state is not None else {}
        for resource, count in resources.items():
            name = models.get(resource)
            measure = self._units.get((resource, name)) if name is not None else None
            if measure is None and name is not None:
                model = self._model(name)
                measure = unit_measure(resource, model, self._prices) if model is not None else None
                if measure is not None:
                    self._units[(resource, name)] = measure
            total = total + (measure or self._upper(resource, offer)).times(count)
        return total

    def _reservation_measure(self, reservation: Allocation, offer: Offer) -> Measure:
        model = self._model(reservation.gpu_model)
        measure = unit_measure(reservation.resource, model, self._prices) if model is not None else None
        measure = measure or self._upper(reservation.resource, offer)
        # The price recorded at reservation is what the reservation costs, whatever the table says now.
        return Measure(measure.gpu_equivalents, measure.memory_gb, reservation.hourly_price).times(
            reservation.count
        )

    def _model(self, name: str | None) -> GpuModel | None:
        if name is None:
            return None
        try:
            return self._catalogue.model(name)
        except CatalogueError:
            return None

    def _open_reservations(self) -> tuple[Allocation, ...]:
        now = self._clock()
        if self._reserved_at is None or now - self._reserved_at >= self._reservations_ttl_s:
            self._reserved = tuple(a for a in self._reservations() if a.status is Status.RESERVED)
            self._reserved_at = now
        return self._reserved


def _claim(pod: Mapping[str, Any]) -> PodClaim | None:
    return pod_claim(pod, admission_key=QUOTA_ADMISSION, reservation_key=ALLOCATION_ID)


def _key(kind: str, obj: Mapping[str, Any]) -> QuotaKey:
    metadata = obj.get("metadata") or {}
    return (kind, str(metadata.get("namespace", "")), str(metadata.get("name", "")))
