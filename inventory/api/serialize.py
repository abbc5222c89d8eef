"""The REST API's JSON: domain objects to the wire (camelCase), and the query string in. Request bodies
are read where their rules live (a reservation: ``inventory.reservations.request``).

Money goes out as JSON numbers in the price table's currency: costs rounded to cents, hourly rates
to 4 decimal places (a MIG slice of a GPU is a fraction of its price). Times are RFC 3339 in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import parse_qsl

from inventory.domain.allocation import Allocation, Status
from inventory.domain.cost import CostAnalysis, profile_key
from inventory.domain.model import GpuDevice
from inventory.domain.prices import PriceTable
from inventory.domain.snapshot import InventorySnapshot

_CENT = Decimal("0.01")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RATE = Decimal("0.0001")
#: ``statusText``: ``status`` (the value ``?status=`` takes) in words, one word per status, so the two
#: never disagree (a reserved allocation read "Allocated" while its pod had not come).
STATUS_WORDS = {
    Status.RESERVED: "Reserved",
    Status.ACTIVE: "Active",
    Status.RELEASED: "Released",
    Status.EXPIRED: "Expired",
    Status.FAILED: "Failed",
}


class BadRequestError(ValueError):
    """A request the API cannot act on (400); the message names the parameter or field."""


def money(amount: Decimal) -> float:
    return _rounded(amount, _CENT)


def rate(amount: Decimal) -> float:
    return _rounded(amount, _RATE)


def _rounded(amount: Decimal, step: Decimal) -> float:
    # Rounding needs every digit of the result in the context's 28: an amount of more than 20 whole
    # digits (a row an older version let in) is shown unrounded rather than failing the whole answer.
    if not amount.is_finite() or amount.adjusted() >= 20:
        return float(amount)
    return float(amount.quantize(step, rounding=ROUND_HALF_EVEN))


def timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# -- Devices and overview ---------------------------------------------------------------------------


def devices(snapshot: InventorySnapshot, node_name: str | None = None) -> list[dict[str, Any]]:
    """Every GPU of every node (or of ``node_name``), in node then index order."""
    found = []
    for name in sorted(snapshot.nodes):
        if node_name is not None and name != node_name:
            continue
        record = snapshot.nodes[name]
        capacity = snapshot.capacity(name)
        assignments = record.gpunode.assignments
        held = None if assignments is None else {d for a in assignments for d in a.device_ids}
        for gpu in sorted(record.gpunode.inventory.gpus, key=lambda g: g.index):
            found.append(
                {
                    "nodeName": name,
                    **_device(gpu, held),
                    "schedulable": capacity.schedulable,
                    "staleReason": capacity.reason,
                }
            )
    return found


def _device(gpu: GpuDevice, held: set[str] | None) -> dict[str, Any]:
    instances = []
    for instance in sorted(gpu.mig_instances, key=lambda i: i.start):
        view: dict[str, Any] = {
            "uuid": instance.uuid,
            "profile": instance.profile.name,
            "resource": instance.profile.resource_name,
            "memoryGb": instance.profile.memory_gb,
        }
        if held is not None:  # known only where the agent could read the kubelet's assignments
            view["allocated"] = instance.uuid is not None and instance.uuid in held
        instances.append(view)
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "model": gpu.model.name,
        "product": gpu.model.product_names[0] if gpu.model.product_names else gpu.model.name,
        "memoryTotalMiB": gpu.memory_total_mib,
        "memoryUsedMiB": gpu.memory_used_mib,
        "temperatureC": gpu.temperature_c,
        "utilizationPercent": gpu.utilization_pct,
        "healthy": gpu.healthy,
        "unhealthyReason": gpu.unhealthy_reason,
        "migEnabled": gpu.mig_enabled,
        "migPending": gpu.mig_pending,
        "migInstances": instances,
    }


def overview(
    snapshot: InventorySnapshot, open_allocations: Iterable[Allocation], prices: PriceTable
) -> dict[str, Any]:
    """Counts of the inventory (healthy capacity, held vs free) and of the open allocations."""
    gpus = [gpu for record in snapshot.nodes.values() for gpu in record.gpunode.inventory.gpus]
    full_total = full_free = 0
    mig: dict[str, list[int]] = {}
    for name in snapshot.nodes:
        capacity = snapshot.capacity(name)
        full_total += capacity.full_gpus_total
        full_free += capacity.full_gpus_free
        for resource, total in capacity.mig_total.items():
            counts = mig.setdefault(profile_key(resource), [0, 0])
            counts[0] += total
            counts[1] += capacity.mig_free.get(resource, 0)
    active = reserved = 0
    hourly = Decimal(0)
    for allocation in open_allocations:
        if allocation.status is Status.ACTIVE:
            active += 1
            hourly += allocation.hourly_price * allocation.count
        elif allocation.status is Status.RESERVED:
            reserved += 1
    by_profile = {key: _usage(total, free) for key, (total, free) in sorted(mig.items())}
    return {
        "nodes": len(snapshot.nodes),
        "gpus": len(gpus),
        "healthyGpus": sum(1 for gpu in gpus if gpu.healthy),
        "migInstances": {
            **_usage(sum(t for t, _ in mig.values()), sum(f for _, f in mig.values())),
            "byProfile": by_profile,
        },
        "fullGpus": _usage(full_total, full_free),
        "activeAllocations": active,
        "reservedAllocations": reserved,
        "costPerHour": rate(hourly),
        "currency": prices.currency,
    }


def _usage(total: int, free: int) -> dict[str, int]:
    return {"total": total, "allocated": total - free, "available": free}


# -- Allocations and cost ---------------------------------------------------------------------------


def allocation(item: Allocation, now: datetime) -> dict[str, Any]:
    """An allocation as the API shows it; ``cost`` is what it has cost up to ``now`` (or its end)."""
    return {
        "allocationId": item.id,
        "namespace": item.namespace,
        "podName": item.pod,
        "podUid": item.pod_uid,
        "nodeName": item.node,
        "resource": item.resource,
        "profile": profile_key(item.resource),
        "count": item.count,
        "gpuModel": item.gpu_model,
        **status(item),
        "startTime": timestamp(item.start),
        "endTime": timestamp(item.end),
        "endInferred": item.end_inferred,
        "deviceIds": list(item.device_ids),
        "teamId": item.team,
        "userId": item.user,
        "workloadType": item.workload_type,
        "expiresAt": timestamp(item.expires_at),
        "maxDurationHours": item.max_duration_hours,
        "costLimit": None if item.cost_limit is None else money(item.cost_limit),
        "costPerHour": rate(item.hourly_price * item.count),
        "cost": money(item.cost(now)),
        "message": item.message,
    }


def status(item: Allocation) -> dict[str, str]:
    """``status`` and ``statusText``, as every answer about an allocation shows them."""
    return {"status": item.status.value, "statusText": STATUS_WORDS[item.status]}


def reservation(item: Allocation) -> dict[str, Any]:
    """The answer to ``POST /api/v1/gpu/allocations``, in the reference clients' words."""
    return {
        "allocationId": item.id,
        "allocatedResource": item.resource,
        "nodeName": item.node,
        "costPerHour": rate(item.hourly_price * item.count),
        **status(item),
    }


def release(item: Allocation) -> dict[str, Any]:
    """The answer to ``DELETE /api/v1/gpu/allocations/{allocationId}``."""
    return {"allocationId": item.id, **status(item)}


def cost_analysis(analysis: CostAnalysis) -> dict[str, Any]:
    return {
        "window": {
            "start": timestamp(analysis.start),
            "end": timestamp(analysis.end),
            "days": float(analysis.days),
        },
        "currency": analysis.currency,
        "total": money(analysis.total),
        "byTeam": _amounts(analysis.by_team),
        "byNamespace": _amounts(analysis.by_namespace),
        "byModel": _amounts(analysis.by_model),
        "byProfile": _amounts(analysis.by_profile),
        "idle": {
            "cost": money(analysis.idle_cost),
            "capacityCost": money(analysis.capacity_cost),
            "utilization": None if analysis.utilization is None else rate(analysis.utilization),
        },
    }


def _amounts(costs: Mapping[str, Decimal]) -> dict[str, float]:
    return {key: money(cost) for key, cost in costs.items()}


# -- Query strings ---------------------------------------------------------------------------------


def query_params(query_string: bytes) -> dict[str, str]:
    """The query's parameters; a blank value means the parameter is not set, a repeated one is refused,
    and so is a value with a control character (no name, label or cursor has one; PostgreSQL refuses a
    NUL in text, which would otherwise come back as a database failure)."""
    query: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            raise BadRequestError(f"query parameter {name[:40]} is given more than once")
        seen.add(name)
        if _CONTROL.search(value):
            raise BadRequestError(f"{name[:40]} must not contain control characters")
        if value:
            query[name] = value
    return query


def int_param(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    # Digits are counted before int() reads them: 5,000 of them would raise (Python's int limit).
    digits = len(value.lstrip("0"))
    if not (value.isascii() and value.isdigit()) or digits > 18 or not low <= int(value) <= high:
        raise BadRequestError(f"{name} must be a whole number from {low} to {high}, not {value[:40]!r}")
    return int(value)
