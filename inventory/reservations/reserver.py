"""Reservations over the inventory cache (the hold) and the ledger (the record).

The resource is chosen by the webhook's own rule (smallest offered MIG instance that fits when a
MIG instance is wanted, else a whole GPU with enough memory); the node by best fit (the one with
the fewest such resources free, so whole blocks stay whole). Check and hold are one step in the
cache, so concurrent reservations and binds never overbook. An unclaimed reservation lapses after
``maxDurationHours`` (24 h when not given); its hold lapses with it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain.allocation import MAX_DURATION_HOURS, Allocation, Status
from inventory.domain.demand import GpuDemand
from inventory.domain.fit import judge_shape, refusal
from inventory.domain.labels import FULL_GPU_RESOURCE, RESOURCE_PREFIX
from inventory.domain.model import NodeName
from inventory.domain.offer import Offer, no_mig_fit_reason, smallest_mig_fit
from inventory.domain.pods import wants_mig
from inventory.domain.prices import PriceTable
from inventory.domain.quota import QuotaAsk, QuotaChecker
from inventory.domain.shape import NodeShape
from inventory.ledger.store import Ledger, LedgerError
from inventory.live.cache import InventoryCache
from inventory.reservations.service import ReservationRefusedError, ReservationRequest

DEFAULT_HOURS = 24


class Reserver:
    def __init__(
        self,
        *,
        cache: InventoryCache,
        ledger: Ledger,
        prices: PriceTable,
        offer: Callable[[], Offer],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_refused: Callable[[str], None] = lambda reason: None,
        on_change: Callable[[Allocation, bool], None] = lambda allocation, opened: None,
        quota: QuotaChecker | None = None,
    ) -> None:
        """``on_refused(reason)`` hears of reservations that could not be placed (metrics, notifications);
        ``on_change(allocation, opened)`` of every reservation recorded (True) or released (False), as
        the reconciler's does of binds, so REST and GpuAllocation reservations are announced alike."""
        self._on_refused = on_refused
        self._on_change = on_change
        # GPU quotas judge a reservation as admission judges a pod (a claiming pod asks nothing more)
        self._quota = quota
        self._cache = cache
        self._ledger = ledger
        self._prices = prices
        self._offer = offer
        self._clock = clock

    def reserve(self, request: ReservationRequest) -> Allocation:
        try:
            return self._reserve(request)
        except ReservationRefusedError as error:
            self._on_refused(str(error))
            raise

    def _reserve(self, request: ReservationRequest) -> Allocation:
        hours = DEFAULT_HOURS if request.max_duration_hours is None else request.max_duration_hours
        if not 1 <= hours <= MAX_DURATION_HOURS:
            raise ReservationRefusedError(
                f"maxDurationHours must be 1..{MAX_DURATION_HOURS}, not {hours}", status=400
            )
        resource = self._resource_for(request)
        demand = GpuDemand(
            resources={resource: 1},
            memory_gb=request.required_memory_gb if resource == FULL_GPU_RESOURCE else None,
        )
        reservation_id = str(uuid.uuid4())
        self._within_quota(request, resource, reservation_id)
        node = self._hold(reservation_id, demand, hours)
        now = self._clock()
        shape = self._cache.snapshot().states[node].shape
        model, share = next(((m, s) for r, m, s in shape.resources if r == resource), (None, 1.0))
        hourly = self._prices.share_hourly(model, share)
        allocation = Allocation(
            id=reservation_id,
            namespace=request.namespace,
            pod=request.pod_name,
            pod_uid=None,
            node=node,
            resource=resource,
            count=1,
            gpu_model=model,
            hourly_price=hourly if hourly is not None else Decimal(0),
            status=Status.RESERVED,
            start=now,
            team=request.team_id,
            user=request.user_id,
            workload_type=request.workload_type,
            expires_at=now + timedelta(hours=hours),
            max_duration_hours=request.max_duration_hours,
            cost_limit=request.cost_limit,
        )
        try:
            recorded = self._ledger.record_reservation(allocation)
        except LedgerError as error:
            self._cache.forget(reservation_id)
            raise ReservationRefusedError(f"the ledger is unavailable: {error}", status=503) from error
        if not recorded:
            # A claim is matched by namespace and pod: a second reservation would leave it to chance.
            self._cache.forget(reservation_id)
            raise ReservationRefusedError(
                f"pod {request.namespace}/{request.pod_name} already has a reservation: release it first",
                status=409,
            )
        self._on_change(allocation, True)
        return allocation

    def _within_quota(self, request: ReservationRequest, resource: str, reservation_id: str) -> None:
        """Refuse (403) a reservation that would take a GPU quota past a limit. Judged as a dry run: once
        recorded, the reservation counts itself, from the ledger."""
        if self._quota is None:
            return
        ask = QuotaAsk(
            key=f"reservation/{reservation_id}",
            namespace=request.namespace,
            team=request.team_id or request.namespace,  # as the webhook labels the claiming pod
            resources={resource: 1},
            dry_run=True,
        )
        refusals = self._quota(ask)
        if refusals:
            raise ReservationRefusedError("; ".join(r.message for r in refusals), status=403)

    def release(self, allocation_id: str) -> Allocation | None:
        """End a reservation no pod has claimed; a claimed one (an active allocation) is refused (409),
        also when its pod claims it between this read and the end: the ledger ends only a row still
        ``reserved``, in the same statement that checks it."""
        found = self._ledger.get(allocation_id)
        if found is None or not found.is_open:
            return None
        if found.status is Status.RESERVED and self._ledger.end_reservation(allocation_id, self._clock()):
            self._cache.forget(allocation_id)
            released = self._ledger.get(allocation_id)
            if released is not None:
                self._on_change(released, False)
            return released
        now = self._ledger.get(allocation_id)
        if now is None or now.status is not Status.ACTIVE:
            return None  # ended meanwhile (expired, or released by another call)
        raise ReservationRefusedError(
            f"allocation {allocation_id} is held by pod {now.namespace}/{now.pod}: delete the pod", status=409
        )

    def restore(self, *, bound: bool = False) -> int:
        """Hold again what open reservations hold (after a restart): how many holds were restored.

        ``bound``: also what the active allocations' pods hold, one hold per pod (keyed by its UID, as
        a bind's is), for as long as the process runs. Only where no watch shows bound pods (standalone):
        with one, the pods themselves are the holds, and a pod gone while we were down holds nothing.
        """
        now = self._clock()
        restored = 0
        pods: dict[str, tuple[NodeName, dict[str, int]]] = {}
        for allocation in self._ledger.open_allocations():
            if allocation.node is None:
                continue
            if allocation.status is Status.ACTIVE:
                if bound and allocation.pod_uid:
                    node, held = pods.setdefault(allocation.pod_uid, (NodeName(allocation.node), {}))
                    held[allocation.resource] = held.get(allocation.resource, 0) + allocation.count
                continue
            remaining = (allocation.expires_at - now).total_seconds() if allocation.expires_at else 0
            if remaining > 0:
                self._cache.assume(
                    allocation.id,
                    NodeName(allocation.node),
                    {allocation.resource: allocation.count},
                    ttl_s=remaining,
                )
                restored += 1
        for uid, (node, held) in pods.items():
            self._cache.assume(uid, node, held, ttl_s=math.inf)
            restored += 1
        return restored

    def _resource_for(self, request: ReservationRequest) -> str:
        """The webhook's rule: a MIG instance when wanted and one fits, else a whole GPU."""
        memory = request.required_memory_gb
        offer = self._offer()
        if memory is not None and offer.resources and memory > offer.largest_gpu_memory_gb:
            raise ReservationRefusedError(
                f"requiredMemoryGb {memory} is more than any GPU here ({offer.largest_gpu_memory_gb} GB)",
                status=400,
            )
        if wants_mig(use_mig=request.use_mig, memory_gb=memory, workload_type=request.workload_type):
            fit = smallest_mig_fit(offer, memory)
            if fit is not None:
                return fit.resource_name
            if request.use_mig is True:
                raise ReservationRefusedError(no_mig_fit_reason(offer, memory), status=409)
        return FULL_GPU_RESOURCE

    def _hold(self, reservation_id: str, demand: GpuDemand, hours: int) -> NodeName:
        snapshot = self._cache.snapshot()
        (resource,) = demand.resources

        def free(item: tuple[NodeName, NodeShape]) -> tuple[int, str]:
            return (item[1].free(resource), item[0])

        candidates = sorted(
            (
                (name, state.shape)
                for name, state in snapshot.states.items()
                if judge_shape(demand, state.shape).fits
            ),
            key=free,
        )
        for name, _ in candidates:
            refused = self._cache.try_assume(
                reservation_id,
                name,
                demand.resources,
                lambda shape: refusal(demand, shape),
                ttl_s=hours * 3600.0,
            )
            if refused is None:
                return name
        short = resource.removeprefix(RESOURCE_PREFIX)
        raise ReservationRefusedError(f"no node has a free {short} now", status=409)
