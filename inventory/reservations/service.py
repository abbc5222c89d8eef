"""Reservations: capacity held through the API (or a GpuAllocation object) before its pod exists.

The contract the REST API calls; ``inventory.reservations.reserver.Reserver`` implements it over the inventory
cache (the hold) and the ledger (the record), so a reservation survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from inventory.domain.allocation import Allocation


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """What a reservation asks for: the body of ``POST /api/v1/gpu/allocations`` or a GpuAllocation's spec,
    read by ``inventory.reservations.request``."""

    namespace: str
    pod_name: str
    workload_type: str = "Development"
    required_memory_gb: Decimal | None = None
    use_mig: bool | None = None
    user_id: str | None = None
    team_id: str | None = None
    #: 1..``MAX_DURATION_HOURS`` (a week); the reservation lapses if its pod has not come by then, and
    #: alerts once running past it.
    max_duration_hours: int | None = None
    cost_limit: Decimal | None = None


class ReservationRefusedError(Exception):
    """No capacity, or a request we cannot act on; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class ReservationService(Protocol):
    def reserve(self, request: ReservationRequest) -> Allocation:
        """Choose a node and resource, hold it, record it (status ``reserved``), or refuse."""
        ...

    def release(self, allocation_id: str) -> Allocation | None:
        """End a reservation or allocation; None when there is no such open allocation."""
        ...
