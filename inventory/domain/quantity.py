"""Kubernetes resource quantities (``resource.Quantity``), read as the API server reads them.

A port of apimachinery's ``pkg/api/resource/quantity.go``: ``ParseQuantity`` (the grammar of
``parseQuantityString``, the suffixes, rounding up to a nano unit, the int64 cap) and
``Quantity.UnmarshalJSON`` (a JSON string or number, surrounding spaces trimmed, ``null`` is zero).
So ``"1k"``, ``"2Ki"``, ``"1e3"`` and ``"1000m"`` are the numbers Kubernetes sees, and a value we
would read differently from the scheduler or the kubelet cannot exist. Pure; exact (``Decimal``).

Two deliberate differences, both on values no real object carries: an exponent outside int32 is
refused (Go wraps it around), and an exponent-form value of 10^19 or more is returned unrounded.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Context, Decimal
from typing import Final

#: Kubernetes caps decimal and binary SI quantities at the largest int64.
MAX_INT64: Final = 2**63 - 1

# parseQuantityString: sign, digits (leading zeros ignored), an optional fraction, then a suffix made
# of the letters "eEinumkKMGTP", an optional sign and digits. Which suffixes mean something is
# decided after (quantitySuffixer.interpret), so "1K" parses here and is refused as a suffix.
_GRAMMAR: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[+-]?[0-9]*)")
_DECIMAL_SUFFIXES: Final = {
    "n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18
}  # fmt: skip
_BINARY_SUFFIXES: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_EXPONENT: Final = re.compile(r"[eE]([+-]?[0-9]+)")
_INT32: Final = 2**31
_NANO: Final = Decimal("1e-9")
_CAP: Final = Decimal(MAX_INT64)
#: Values from 10^19 up are past the int64 cap whatever their digits (10^19 > 2^63 - 1).
_PAST_CAP_DIGITS: Final = 19


class QuantityError(ValueError):
    """Not a Kubernetes quantity (the API server would refuse it)."""


def parse_quantity(text: str) -> Decimal:
    """The value of ``text`` as ``resource.ParseQuantity`` gives it (``"2Ki"`` is 2048)."""
    if not text:
        raise QuantityError("an empty string is not a quantity")
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        raise QuantityError(f"{_shown(text)} is not a quantity (like 1, 500m, 2Ki, 1e3)")
    sign, whole, fraction, suffix = match.groups()
    fraction = fraction or ""
    digits = f"{whole or '0'}.{fraction or '0'}"
    exponent10, exponent2, capped = _suffix(suffix, text)
    magnitude = Decimal(f"{digits}e{exponent10}")  # exact, whatever the number of digits
    if not magnitude:
        return Decimal(0)
    if magnitude.adjusted() >= _PAST_CAP_DIGITS:  # every further step keeps it past the cap
        value = _CAP if capped else magnitude
        return -value if sign == "-" else value
    # Enough precision that the binary product and the rounding are exact (no digit is ever lost).
    context = Context(prec=len(whole) + len(fraction) + 60, rounding=ROUND_UP)
    if exponent2:
        magnitude = context.multiply(magnitude, Decimal(2**exponent2))
    # Non-zero values round up to a whole nano unit: "if you want some resources, you should get some".
    magnitude = magnitude.quantize(_NANO, context=context)
    if capped and magnitude > _CAP:
        magnitude = _CAP
    return -magnitude if sign == "-" else magnitude


def quantity_value(value: object) -> Decimal:
    """A quantity as it appears in a decoded JSON object: what ``Quantity.UnmarshalJSON`` accepts.

    A string (surrounding white space ignored) or a JSON number; ``None`` (JSON ``null``) is zero.
    """
    if value is None:
        return Decimal(0)
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return parse_quantity(str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a quantity")
        return parse_quantity(repr(value))
    if isinstance(value, str):
        return parse_quantity(value.strip())
    raise QuantityError(f"a {type(value).__name__} is not a quantity")


def _suffix(suffix: str, text: str) -> tuple[int, int, bool]:
    """(power of ten, power of two, capped at int64) for a suffix, as quantitySuffixer.interpret reads it."""
    if suffix in _DECIMAL_SUFFIXES:
        return _DECIMAL_SUFFIXES[suffix], 0, True
    if suffix in _BINARY_SUFFIXES:
        return 0, _BINARY_SUFFIXES[suffix], True
    match = _EXPONENT.fullmatch(suffix)
    if match is None:
        raise QuantityError(f"{_shown(text)} has an unknown suffix {_shown(suffix)}")
    exponent = int(match.group(1)) if len(match.group(1)) <= 12 else _INT32
    if not -_INT32 <= exponent < _INT32:
        raise QuantityError(f"{_shown(text)} has an exponent out of range")
    return exponent, 0, False  # Kubernetes does not cap the exponent form


def _shown(text: str) -> str:
    """The text for a message, cut short: a quantity may be a megabyte of digits."""
    return repr(text if len(text) <= 40 else text[:37] + "...")
