"""The OpenAPI 3.1 document of the REST API, served at ``/api/v1/openapi.json``.

Hand-written so that it says what the handlers promise (``views.py`` writes these shapes); a test
checks it is valid OpenAPI, that it names every route of the app and no other, and that the answers
of the app match its schemas.
"""

from __future__ import annotations

from typing import Any

from inventory.domain.allocation import MAX_DURATION_HOURS
from inventory.reservations.request import MAX_COST_LIMIT, MAX_MEMORY_GB

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


def _object(
    properties: dict[str, Any], *, required: list[str] | None = None, closed: bool = True
) -> dict[str, Any]:
    """An object schema; ``closed``: no other properties (answers list every field they have)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **({"additionalProperties": False} if closed else {}),
    }


def _data(schema: dict[str, Any], **more: Any) -> dict[str, Any]:
    return _object({"data": schema, **more})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/{_ERRORS[status][0]}"} for status in statuses}


_ERRORS = {
    400: ("BadRequest", "A parameter or field is not valid; the message names it."),
    401: ("Unauthorized", "No bearer token, an unknown or expired one, or no tokens configured here."),
    403: ("Forbidden", "The caller's roles (or RBAC) may not use this path, or not in that namespace."),
    404: ("NotFound", "No such allocation (or no open one, for a release), or no such node."),
    409: ("Conflict", "The reservation was refused: no capacity that fits."),
    413: ("PayloadTooLarge", "The body is larger than 64 KiB."),
    503: (
        "Unavailable",
        "The allocation ledger's database is unavailable, or who calls cannot be checked now (the "
        "Kubernetes API server or the identity provider's keys cannot be reached).",
    ),
}
_MONEY = {"type": "number", "description": "In the currency of the price table; costs rounded to cents."}
_RATE = {"type": "number", "description": "Per hour, in the price table's currency, 4 decimal places."}
_TIME = {"type": "string", "format": "date-time"}
_USAGE = _object({n: {"type": "integer", "minimum": 0} for n in ("total", "allocated", "available")})
_COSTS = {"type": "object", "additionalProperties": _MONEY}
_STATUS = ["reserved", "active", "released", "expired", "failed"]
_STATUS_TEXT = {
    "type": "string",
    "enum": [word.capitalize() for word in _STATUS],
    "description": "`status` in words: the same state, never another.",
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _object({"code": {"type": "integer"}, "message": {"type": "string"}})}),
    "MigInstance": _object(
        {
            "uuid": _nullable("string"),
            "profile": {"type": "string", "examples": ["3g.40gb"]},
            "resource": {"type": "string", "examples": ["nvidia.com/mig-3g.40gb"]},
            "memoryGb": {"type": "integer"},
            "allocated": {
                "type": "boolean",
                "description": "Held by a pod; absent where the node agent cannot read the kubelet's API.",
            },
        },
        required=["uuid", "profile", "resource", "memoryGb"],
    ),
    "Device": _object(
        {
            "nodeName": {"type": "string"},
            "index": {"type": "integer"},
            "uuid": _nullable("string"),
            "model": {"type": "string", "examples": ["H100-80GB"]},
            "product": {"type": "string", "examples": ["NVIDIA H100 80GB HBM3"]},
            "memoryTotalMiB": _nullable("integer"),
            "memoryUsedMiB": _nullable("integer"),
            "temperatureC": _nullable("integer"),
            "utilizationPercent": _nullable("integer"),
            "healthy": {"type": "boolean"},
            "unhealthyReason": _nullable("string"),
            "migEnabled": {"type": "boolean"},
            "migPending": {"type": "boolean", "description": "A MIG mode change waits for a GPU reset."},
            "migInstances": {"type": "array", "items": _ref("MigInstance")},
            "schedulable": {"type": "boolean", "description": "False while the node's inventory is stale."},
            "staleReason": _nullable("string"),
        }
    ),
    "Allocation": _object(
        {
            "allocationId": {"type": "string"},
            "namespace": {"type": "string"},
            "podName": {"type": "string"},
            "podUid": _nullable("string", description="Null for a reservation whose pod has not come."),
            "nodeName": _nullable("string"),
            "resource": {"type": "string", "examples": ["nvidia.com/gpu", "nvidia.com/mig-3g.40gb"]},
            "profile": {"type": "string", "examples": ["gpu", "mig-3g.40gb"]},
            "count": {"type": "integer", "minimum": 1},
            "gpuModel": _nullable("string"),
            "status": {"type": "string", "enum": _STATUS},
            "statusText": _STATUS_TEXT,
            "startTime": _TIME,
            "endTime": _nullable("string", format="date-time"),
            "endInferred": {"type": "boolean", "description": "The end is when the loss was discovered."},
            "deviceIds": {"type": "array", "items": {"type": "string"}},
            "teamId": _nullable("string"),
            "userId": _nullable("string"),
            "workloadType": _nullable("string"),
            "expiresAt": _nullable("string", format="date-time"),
            "maxDurationHours": _nullable("integer"),
            "costLimit": _nullable("number"),
            "costPerHour": _RATE,
            "cost": {**_MONEY, "description": "Cost from its start to its end, or to now while open."},
            "message": _nullable("string"),
        }
    ),
    "Pagination": _object(
        {
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 500},
            "nextCursor": _nullable(
                "string", description="Pass as `cursor` for the next page; null at the end."
            ),
        }
    ),
    "ReservationRequest": {
        **_object(
            {
                "namespace": {"type": "string", "maxLength": 63},
                "podName": {"type": "string", "maxLength": 253},
                "workloadType": {"type": "string", "enum": ["Training", "Inference", "Development"]},
                "requiredMemoryGb": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEMORY_GB},
                "useMig": _nullable("boolean"),
                "userId": {"type": "string", "maxLength": 63},
                "teamId": {"type": "string", "maxLength": 63},
                "maxDurationHours": {"type": "integer", "minimum": 1, "maximum": MAX_DURATION_HOURS},
                "costLimit": {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_COST_LIMIT)},
            },
            required=["namespace", "podName"],  # any other field is refused by name (400)
        ),
    },
    "Reservation": _object(
        {
            "allocationId": {"type": "string"},
            "allocatedResource": {"type": "string", "examples": ["nvidia.com/mig-3g.40gb"]},
            "nodeName": _nullable("string"),
            "costPerHour": _RATE,
            "status": {"type": "string", "const": "reserved"},
            "statusText": {"type": "string", "const": "Reserved"},
        }
    ),
    "Release": _object(
        {
            "allocationId": {"type": "string"},
            "status": {"type": "string", "const": "released"},
            "statusText": {"type": "string", "const": "Released"},
        }
    ),
    "Overview": _object(
        {
            "nodes": {"type": "integer"},
            "gpus": {"type": "integer"},
            "healthyGpus": {"type": "integer"},
            "migInstances": {
                **_USAGE,
                "properties": {
                    **_USAGE["properties"],
                    "byProfile": {"type": "object", "additionalProperties": _USAGE},
                },
                "required": [*_USAGE["required"], "byProfile"],
            },
            "fullGpus": _USAGE,
            "activeAllocations": {"type": "integer"},
            "reservedAllocations": {"type": "integer"},
            "costPerHour": {**_RATE, "description": "Sum of the hourly prices of the active allocations."},
            "currency": {"type": "string", "examples": ["USD"]},
        }
    ),
    "CostAnalysis": _object(
        {
            "window": _object({"start": _TIME, "end": _TIME, "days": {"type": "number"}}),
            "currency": {"type": "string"},
            "total": _MONEY,
            "byTeam": {**_COSTS, "description": "Team -> cost; `unassigned` for allocations without one."},
            "byNamespace": _COSTS,
            "byModel": _COSTS,
            "byProfile": {**_COSTS, "description": "`gpu` for whole GPUs, `mig-<profile>` for MIG."},
            "idle": _object(
                {
                    "cost": {**_MONEY, "description": "Capacity cost not covered by allocations."},
                    "capacityCost": {**_MONEY, "description": "Every healthy GPU now, over the window."},
                    "utilization": _nullable("number", description="Allocated / capacity cost."),
                }
            ),
        }
    ),
    "Health": _object(
        {
            "status": {"type": "string", "const": "ok"},
            "ledger": {"type": "string", "const": "writable", "description": "It took a write just now."},
        }
    ),
    "MigLayout": _object(
        {
            "migEnabled": {"type": "boolean"},
            "profiles": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "MIG profile -> instances; null with MIG off (one whole GPU).",
            },
            "description": {"type": "string", "examples": ["3g.40gb + 2 x 1g.10gb", "MIG off"]},
        }
    ),
    "Quota": _object(
        {
            "kind": {"type": "string", "enum": ["GpuQuota", "ResourceQuota"]},
            "namespace": {"type": "string"},
            "name": {"type": "string"},
            "team": _nullable(
                "string", description="Counts the pods with this team label; null: the namespace's."
            ),
            "scope": {"type": "string", "examples": ["team nlp", "namespace ml"]},
            "line": _nullable("string", description="The ResourceQuota line read (requests.nvidia.com/gpu)."),
            "limits": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Set ones.",
            },
            "used": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "gpuEquivalents, memoryGB, costPerHour, costPerDay (x24), costPerMonth (x730)",
            },
            "utilization": {"type": "object", "additionalProperties": {"type": "number"}},
            "holders": {
                "type": "integer",
                "minimum": 0,
                "description": "Pods, reservations, fresh admissions.",
            },
        }
    ),
    "QuotaList": _object(
        {
            "currency": {"type": "string"},
            "quotas": {"type": "array", "items": _ref("Quota")},
            "invalid": {
                "type": "array",
                "items": _object(
                    {
                        "namespace": {"type": "string"},
                        "name": {"type": "string"},
                        "message": {"type": "string"},
                    }
                ),
            },
        }
    ),
    "MigPlan": _object(
        {
            "mode": {"type": "string", "enum": ["off", "recommend", "apply"]},
            "applies": {
                "type": "boolean",
                "description": "This replica applies the plan (apply mode, and it holds the Lease).",
            },
            "plannedAt": _nullable("string", format="date-time", description="Null before the first round."),
            "summary": _nullable("string"),
            "changes": {
                "type": "array",
                "items": _object(
                    {
                        "nodeName": {"type": "string"},
                        "gpu": {"type": "integer", "minimum": 0},
                        "model": {"type": "string"},
                        "before": _ref("MigLayout"),
                        "after": _ref("MigLayout"),
                        "destroyed": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Free instances the change destroys (never a held one).",
                        },
                        "reason": {"type": "string"},
                    }
                ),
            },
            "heldBack": {
                "type": "array",
                "items": _object({"nodeName": {"type": "string"}, "reason": {"type": "string"}}),
            },
            "reconfiguring": {
                "type": "array",
                "items": _object({"nodeName": {"type": "string"}, "config": {"type": "string"}}),
                "description": "Nodes asked for a new layout whose report has not shown it yet.",
            },
        }
    ),
}

_ALLOCATION_ID = {"name": "allocationId", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_PATHS: dict[str, Any] = {
    "/api/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness of the API and of its ledger, which takes a write that changes nothing "
            "(no token needed).",
            "security": [],
            "responses": {"200": _json(_data(_ref("Health")), "Up."), **_errors(503)},
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document (no token needed).",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    },
    "/api/v1/gpu/devices": {
        "get": {
            "operationId": "listDevices",
            "summary": "Every GPU the node agents report. Roles: ADMIN, OPERATOR.",
            "parameters": [_query("nodeName", "Only this node's GPUs; 404 when no GPU node has this name.")],
            "responses": {
                "200": _json(_data({"type": "array", "items": _ref("Device")}), "The GPUs."),
                **_errors(401, 403, 404),
            },
        }
    },
    "/api/v1/gpu/allocations": {
        "get": {
            "operationId": "listAllocations",
            "summary": "Allocations, newest first, a page at a time. Roles: ADMIN, USER, OPERATOR.",
            "parameters": [
                _query("namespace", "Only this namespace."),
                _query("team", "Only this team."),
                _query("status", "Only this status.", {"type": "string", "enum": _STATUS}),
                _query("nodeName", "Only this node."),
                _query(
                    "limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
                ),
                _query("cursor", "The previous page's nextCursor."),
            ],
            "responses": {
                "200": _json(
                    _data({"type": "array", "items": _ref("Allocation")}, pagination=_ref("Pagination")),
                    "A page of allocations.",
                ),
                **_errors(400, 401, 403, 503),
            },
        },
        "post": {
            "operationId": "reserveGpu",
            "summary": "Reserve GPU capacity for a pod to come. Roles: ADMIN, USER, OPERATOR.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ReservationRequest")}},
            },
            "responses": {
                "201": _json(_data(_ref("Reservation")), "Reserved; Location names the allocation."),
                **_errors(400, 401, 403, 409, 413, 503),
            },
        },
    },
    "/api/v1/gpu/allocations/{allocationId}": {
        "parameters": [_ALLOCATION_ID],
        "get": {
            "operationId": "getAllocation",
            "summary": "One allocation. Roles: ADMIN, USER, OPERATOR.",
            "responses": {
                "200": _json(_data(_ref("Allocation")), "The allocation."),
                **_errors(401, 403, 404),
            },
        },
        "delete": {
            "operationId": "releaseAllocation",
            "summary": "Release a reservation or allocation. Roles: ADMIN, USER, OPERATOR.",
            "responses": {
                "200": _json(_data(_ref("Release")), "Released."),
                **_errors(401, 403, 404, 503),
            },
        },
    },
    "/api/v1/gpu/overview": {
        "get": {
            "operationId": "overview",
            "summary": "Capacity, use and spend at a glance. Every role.",
            "responses": {"200": _json(_data(_ref("Overview")), "The overview."), **_errors(401, 403, 503)},
        }
    },
    "/api/v1/gpu/mig/plan": {
        "get": {
            "operationId": "migPlan",
            "summary": "The MIG planner's last plan: layout changes with their reasons, nodes held back. "
            "Every role.",
            "responses": {"200": _json(_data(_ref("MigPlan")), "The plan."), **_errors(401, 403, 503)},
        }
    },
    "/api/v1/gpu/quotas": {
        "get": {
            "operationId": "quotas",
            "summary": "GPU quotas (GpuQuotas, ResourceQuota GPU lines), their limits and use. Every role.",
            "responses": {"200": _json(_data(_ref("QuotaList")), "The quotas."), **_errors(401, 403, 503)},
        }
    },
    "/api/v1/gpu/cost/analysis": {
        "get": {
            "operationId": "costAnalysis",
            "summary": "Cost over the last days, grouped, with idle capacity. Roles: ADMIN, VIEWER, FINANCE.",
            "parameters": [
                _query(
                    "days", "Window length.", {"type": "integer", "minimum": 1, "maximum": 90, "default": 7}
                )
            ],
            "responses": {
                "200": _json(_data(_ref("CostAnalysis")), "The analysis."),
                **_errors(400, 401, 403, 503),
            },
        }
    },
}


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    responses = {name: _json(_ref("Error"), description) for name, description in _ERRORS.values()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "k8s-gpu-management API",
            "version": "1",
            "description": "GPU inventory, allocations and cost. Errors: {error: {code, message}}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _copy(_PATHS),
        "components": {
            "schemas": _copy(_SCHEMAS),
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of the tokens file, a Kubernetes token (--api-auth kubernetes: "
                    "RBAC on gpu.kgm.io decides) or an OIDC JWT (--api-auth oidc: its role claim decides).",
                }
            },
        },
    }


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
