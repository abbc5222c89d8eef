"""A typed client for the REST API: the calls the reference clients make.

    client = GpuClient("https://kgm.kgm-system.svc:8443", token=..., verify="/path/ca.crt")
    reserved = client.allocate(AllocationRequest(namespace="ml", pod_name="llm", required_memory_gb=40))
    client.release(reserved.allocation_id)

Every error answer becomes :class:`ApiError` with the server's status, code and message; a server
whose certificate the client does not trust, :class:`UntrustedServerError`. Every result keeps what the
server answered, as it said it (``api``: the API's camelCase), for ``kgm ... --json``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class UntrustedServerError(ApiError):
    """The server's certificate failed verification (unknown CA, wrong name, expired)."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(0, f"the certificate of {base_url} is not trusted: {reason}")
        self.reason = reason


def _api() -> Any:
    """The ``api`` field: what the server answered, unchanged (camelCase), kept with a typed result."""
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MigInstance:
    uuid: str | None
    profile: str
    resource: str
    memory_gb: int


@dataclass(frozen=True, slots=True)
class Device:
    node_name: str
    index: int
    uuid: str | None
    model: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    temperature_c: int | None
    utilization_percent: int | None
    healthy: bool
    unhealthy_reason: str | None
    mig_enabled: bool
    mig_instances: tuple[MigInstance, ...]
    schedulable: bool
    api: Mapping[str, Any] = _api()


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """The reference body of ``POST /api/v1/gpu/allocations``."""

    namespace: str
    pod_name: str
    workload_type: str = "Development"
    required_memory_gb: float | None = None
    use_mig: bool | None = None
    user_id: str | None = None
    team_id: str | None = None
    max_duration_hours: int | None = None
    cost_limit: float | None = None

    def body(self) -> dict[str, Any]:
        fields = {
            "namespace": self.namespace,
            "podName": self.pod_name,
            "workloadType": self.workload_type,
            "requiredMemoryGb": self.required_memory_gb,
            "useMig": self.use_mig,
            "userId": self.user_id,
            "teamId": self.team_id,
            "maxDurationHours": self.max_duration_hours,
            "costLimit": self.cost_limit,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class AllocationResult:
    allocation_id: str
    allocated_resource: str
    node_name: str | None
    cost_per_hour: float
    status: str
    status_text: str
    api: Mapping[str, Any] = _api()


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    allocation_id: str
    status: str
    status_text: str
    api: Mapping[str, Any] = _api()


@dataclass(frozen=True, slots=True)
class Overview:
    nodes: int
    gpus: int
    healthy_gpus: int
    active_allocations: int
    reserved_allocations: int
    cost_per_hour: float
    currency: str
    mig_instances: dict[str, Any] = field(default_factory=dict)
    full_gpus: dict[str, int] = field(default_factory=dict)
    api: Mapping[str, Any] = _api()


@dataclass(frozen=True, slots=True)
class CostAnalysis:
    days: float
    currency: str
    total: float
    by_team: dict[str, float]
    by_namespace: dict[str, float]
    by_model: dict[str, float]
    by_profile: dict[str, float]
    idle_cost: float
    utilization: float | None
    api: Mapping[str, Any] = _api()


class GpuClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``verify``: a CA file path, an SSLContext, True (system CAs) or False (no checks: tests only)."""
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    def devices(self, node_name: str | None = None) -> list[Device]:
        data = self._call("GET", "/api/v1/gpu/devices", params={"nodeName": node_name} if node_name else None)
        return [_device(entry) for entry in data]

    def allocate(self, request: AllocationRequest) -> AllocationResult:
        data = self._call("POST", "/api/v1/gpu/allocations", json=request.body())
        return AllocationResult(
            allocation_id=data["allocationId"],
            allocated_resource=data["allocatedResource"],
            node_name=data.get("nodeName"),
            cost_per_hour=float(data["costPerHour"]),
            status=data["status"],
            status_text=data.get("statusText", ""),
            api=data,
        )

    def release(self, allocation_id: str) -> ReleaseResult:
        data = self._call("DELETE", f"/api/v1/gpu/allocations/{allocation_id}")
        return ReleaseResult(
            allocation_id=data["allocationId"],
            status=data["status"],
            status_text=data.get("statusText", ""),
            api=data,
        )

    def allocation(self, allocation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/gpu/allocations/{allocation_id}")
        return result

    def overview(self) -> Overview:
        data = self._call("GET", "/api/v1/gpu/overview")
        return Overview(
            nodes=data["nodes"],
            gpus=data["gpus"],
            healthy_gpus=data["healthyGpus"],
            active_allocations=data["activeAllocations"],
            reserved_allocations=data["reservedAllocations"],
            cost_per_hour=float(data["costPerHour"]),
            currency=data["currency"],
            mig_instances=data.get("migInstances", {}),
            full_gpus=data.get("fullGpus", {}),
            api=data,
        )

    def cost_analysis(self, days: int = 7) -> CostAnalysis:
        data = self._call("GET", "/api/v1/gpu/cost/analysis", params={"days": str(days)})
        idle = data.get("idle") or {}
        return CostAnalysis(
            days=float(data["window"]["days"]),
            currency=data["currency"],
            total=float(data["total"]),
            by_team=dict(data["byTeam"]),
            by_namespace=dict(data["byNamespace"]),
            by_model=dict(data["byModel"]),
            by_profile=dict(data["byProfile"]),
            idle_cost=float(idle.get("cost", 0)),
            utilization=idle.get("utilization"),
            api=data,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            untrusted = _verification_failure(error)
            if untrusted is not None:
                raise UntrustedServerError(str(self._http.base_url), untrusted) from error
            raise ApiError(0, f"cannot reach {self._http.base_url}: {error}") from error
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, f"not a JSON answer: {response.text[:200]}") from None
        if response.status_code >= 400 or not isinstance(body, dict) or "data" not in body:
            problem = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(response.status_code, str(problem.get("message") or response.reason_phrase))
        return body["data"]


def _device(entry: dict[str, Any]) -> Device:
    return Device(
        node_name=entry["nodeName"],
        index=entry["index"],
        uuid=entry.get("uuid"),
        model=entry["model"],
        memory_total_mib=entry.get("memoryTotalMiB"),
        memory_used_mib=entry.get("memoryUsedMiB"),
        temperature_c=entry.get("temperatureC"),
        utilization_percent=entry.get("utilizationPercent"),
        healthy=bool(entry.get("healthy")),
        unhealthy_reason=entry.get("unhealthyReason"),
        mig_enabled=bool(entry.get("migEnabled")),
        mig_instances=tuple(
            MigInstance(
                uuid=m.get("uuid"), profile=m["profile"], resource=m["resource"], memory_gb=m["memoryGb"]
            )
            for m in entry.get("migInstances") or []
        ),
        schedulable=bool(entry.get("schedulable", True)),
        api=entry,
    )


def _verification_failure(error: BaseException) -> str | None:
    """Why the server's certificate failed verification, if that is what ``error`` comes from (httpx
    wraps the ``ssl`` error it met in a ConnectError)."""
    seen: BaseException | None = error
    for _ in range(10):  # a cause chain is short; a cycle must not hang us
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    return None
