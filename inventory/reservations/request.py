"""The one reading of a reservation request, for both ways in: the body of ``POST /api/v1/gpu/allocations``
and the spec of a GpuAllocation object.

Both carry the same fields under the same names, checked by the same rules. They differ where their
schemas differ (the REST API's OpenAPI document and the CRD's), and in how their errors have always been
worded; a :class:`Wire` says how, and :data:`BODY` and :data:`SPEC` are the two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from inventory.domain.allocation import MAX_DURATION_HOURS
from inventory.domain.names import (
    DNS_LABEL,
    DNS_LABEL_MAX,
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_MAX,
    LABEL_VALUE,
    LABEL_VALUE_MAX,
)
from inventory.domain.pods import WorkloadType
from inventory.reservations.service import ReservationRequest

#: The most GPU memory a request may ask for, in GB (no GPU has a terabyte; the CRD's ``maximum``).
MAX_MEMORY_GB = 1024
#: The largest ``costLimit``, in the price table's currency (the CRD's ``maximum``): every amount
#: the API shows is rounded to cents, which a ``Decimal`` does exactly only for amounts of a few digits.
MAX_COST_LIMIT = Decimal(1_000_000_000)
#: Every field a request may have; any other, or one of these cased otherwise, is refused by name.
FIELDS = (
    "namespace", "podName", "workloadType", "requiredMemoryGb", "useMig", "userId", "teamId",
    "maxDurationHours", "costLimit",
)  # fmt: skip


class RequestError(ValueError):
    """A request that cannot be acted on; the message names the first bad field."""


@dataclass(frozen=True, slots=True)
class Wire:
    """Where one way in differs from the other. Templates are ``str.format``-ed with ``field`` (the
    field's name with ``prefix``), ``value`` (what was sent) and as noted."""

    #: Put before a field's name in messages (``spec.`` for a GpuAllocation).
    prefix: str
    #: Field -> the words for its kind of name in "is not a valid ...".
    kinds: Mapping[str, str]
    #: A name that is not a string (``required``: "is required and " for a required one, else "").
    not_a_string: str
    #: A number field that holds no number (``bound``: "greater than 0" or "at least 0").
    not_a_number: str
    #: A number outside its bound (``bound`` as above).
    out_of_bounds: str
    not_a_boolean: str
    #: ``maxDurationHours`` that is not a whole number of hours in range (``most``: the longest).
    bad_hours: str
    #: An empty string is an unset name (the CRD's schema lets a label value be empty); else it is refused.
    empty_is_unset: bool
    #: ``24.0`` is a whole number of hours (the CRD's integer arrives as a JSON number); else refused.
    whole_floats: bool
    #: ``costLimit`` may be 0 (the CRD's ``minimum: 0``); else it must be greater than 0.
    zero_cost_limit: bool


#: ``POST /api/v1/gpu/allocations`` (``inventory/api/openapi.py``'s ``ReservationRequest``).
BODY = Wire(
    prefix="",
    kinds={
        "namespace": "Kubernetes namespace name",
        "podName": "Kubernetes pod name",
        "userId": "Kubernetes label value",
        "teamId": "Kubernetes label value",
    },
    not_a_string="{field} {required}must be a non-empty string",
    not_a_number="{field} must be a number",
    out_of_bounds="{field} must be {bound}",
    not_a_boolean="{field} must be true, false or null",
    bad_hours="{field} must be a whole number of hours, 1..{most}",
    empty_is_unset=False,
    whole_floats=False,
    zero_cost_limit=False,
)

#: A GpuAllocation's ``spec`` (``manifests/crds/gpuallocation.yaml``).
SPEC = Wire(
    prefix="spec.",
    kinds={"podName": "DNS subdomain name", "userId": "label value", "teamId": "label value"},
    not_a_string="{field} must be a string, not {value!r}",
    not_a_number="{field} must be a number {bound}, not {value!r}",
    out_of_bounds="{field} must be a number {bound}, not {value!r}",
    not_a_boolean="{field} must be true or false, not {value!r}",
    bad_hours="{field} must be a whole number 1..{most}, not {value!r}",
    empty_is_unset=True,
    whole_floats=True,
    zero_cost_limit=True,
)


def parse_request(
    fields: Mapping[str, Any], wire: Wire, *, namespace: str | None = None, pod_name: str | None = None
) -> ReservationRequest:
    """The reservation ``fields`` ask for, read as ``wire`` says; a field it does not know is refused (a
    mis-cased ``requiredMemoryGB`` silently ignored would reserve something else than was asked for).

    ``namespace``: where the request comes from (a GpuAllocation's own); None reads it from ``fields``,
    where it is then required. ``pod_name``: the pod name when ``fields`` has none; None makes it required.
    Raises :class:`RequestError` naming the first bad field.
    """
    _refuse_unknown(fields, wire, namespaced=namespace is None)
    reader = _Reader(fields, wire)
    if namespace is None:
        namespace = reader.name("namespace", DNS_LABEL, DNS_LABEL_MAX, required=True) or ""
    pod = reader.name("podName", DNS_SUBDOMAIN, DNS_SUBDOMAIN_MAX, required=pod_name is None)
    return ReservationRequest(
        namespace=namespace,
        pod_name=pod or pod_name or "",
        workload_type=reader.workload_type("workloadType"),
        required_memory_gb=reader.number("requiredMemoryGb", zero_allowed=False, most=Decimal(MAX_MEMORY_GB)),
        use_mig=reader.boolean("useMig"),
        user_id=reader.name("userId", LABEL_VALUE, LABEL_VALUE_MAX),
        team_id=reader.name("teamId", LABEL_VALUE, LABEL_VALUE_MAX),
        max_duration_hours=reader.hours("maxDurationHours"),
        cost_limit=reader.number("costLimit", zero_allowed=wire.zero_cost_limit, most=MAX_COST_LIMIT),
    )


def body_request(body: object) -> ReservationRequest:
    """The body of ``POST /api/v1/gpu/allocations``: a JSON object read as :data:`BODY`."""
    if not isinstance(body, Mapping):
        raise RequestError("the body must be a JSON object")
    return parse_request(body, BODY)


def _refuse_unknown(fields: Mapping[str, Any], wire: Wire, *, namespaced: bool) -> None:
    known = {name for name in FIELDS if namespaced or name != "namespace"}
    unknown = sorted(str(name) for name in fields if name not in known)
    if not unknown:
        return
    by_case = {name.lower(): name for name in known}
    named = []
    for name in unknown[:20]:
        meant = by_case.get(name.lower())
        shown = f"{wire.prefix}{name[:80]}"
        named.append(f"{shown} ({meant}?)" if meant else shown)
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    raise RequestError(f"unknown fields: {', '.join(named)}{more}")


@dataclass(frozen=True, slots=True)
class _Reader:
    fields: Mapping[str, Any]
    wire: Wire

    def _error(self, template: str, field: str, value: object, **words: object) -> RequestError:
        return RequestError(template.format(field=self.wire.prefix + field, value=value, **words))

    def name(
        self, field: str, pattern: re.Pattern[str], longest: int, *, required: bool = False
    ) -> str | None:
        """A name-like string; None when absent (or empty, where the wire allows it) and not required."""
        value = self.fields.get(field)
        unset = value is None or (value == "" and self.wire.empty_is_unset)
        if unset and not required:
            return None
        if not isinstance(value, str) or not value:
            required_words = "is required and " if required else ""
            raise self._error(self.wire.not_a_string, field, value, required=required_words)
        if len(value) > longest or not pattern.fullmatch(value):
            kind, shown = self.wire.kinds[field], value[:80]
            raise self._error(
                "{field} {shown!r} is not a valid {kind} (at most {longest} characters)",
                field,
                value,
                shown=shown,
                kind=kind,
                longest=longest,
            )
        return value

    def workload_type(self, field: str) -> str:
        value = self.fields.get(field)
        if value is None:
            return WorkloadType.DEVELOPMENT.value
        for workload in WorkloadType:
            if isinstance(value, str) and value.lower() == workload.value.lower():
                return workload.value
        raise RequestError(
            f"{self.wire.prefix}{field} must be one of {', '.join(WorkloadType)}, not {value!r}"
        )

    def number(self, field: str, *, zero_allowed: bool, most: Decimal) -> Decimal | None:
        value = self.fields.get(field)
        if value is None:
            return None
        bound = f"{'at least 0' if zero_allowed else 'greater than 0'} and at most {most}"
        shown = _shown(value)
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self._error(self.wire.not_a_number, field, shown, bound=bound)
        try:
            # An int straight (str() of one past 4,300 digits raises); a float through its shortest text.
            amount = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
        except InvalidOperation:  # pragma: no cover - str() of a JSON number is always a decimal
            raise self._error(self.wire.not_a_number, field, shown, bound=bound) from None
        if not amount.is_finite() or amount < 0 or (amount == 0 and not zero_allowed) or amount > most:
            raise self._error(self.wire.out_of_bounds, field, shown, bound=bound)
        return amount

    def boolean(self, field: str) -> bool | None:
        value = self.fields.get(field)
        if value is not None and not isinstance(value, bool):
            raise self._error(self.wire.not_a_boolean, field, value)
        return value

    def hours(self, field: str) -> int | None:
        value = self.fields.get(field)
        if value is None:
            return None
        # True is not a number of hours (bool is an int in Python).
        hours = None
        if isinstance(value, int) and not isinstance(value, bool):
            hours = value
        elif self.wire.whole_floats and isinstance(value, float) and value.is_integer():
            hours = int(value)
        if hours is None or not 1 <= hours <= MAX_DURATION_HOURS:
            raise self._error(self.wire.bad_hours, field, value, most=MAX_DURATION_HOURS)
        return hours


def _shown(value: object) -> object:
    """``value`` fit for a message: a number of thousands of digits is not echoed whole."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a number of {value.bit_length()} bits"
    return value
