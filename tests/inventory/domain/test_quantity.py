"""Quantities read as apimachinery's ``resource.ParseQuantity`` and ``Quantity.UnmarshalJSON`` read them
(expected values from quantity_test.go and from what the API server stores for each input)."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest

from inventory.domain.quantity import MAX_INT64, QuantityError, parse_quantity, quantity_value
from tests.support.k8s_openapi import QUANTITY_PATTERN


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("1", 1, id="plain"),
        pytest.param("0", 0, id="zero"),
        pytest.param("+2", 2, id="plus sign"),
        pytest.param("-2", -2, id="minus sign"),
        pytest.param("007", 7, id="leading zeros"),
        pytest.param("1k", 1000, id="kilo"),
        pytest.param("2Ki", 2048, id="kibi"),
        pytest.param("1Mi", 2**20, id="mebi"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("1E3", 1000, id="upper-case exponent"),
        pytest.param("1e+3", 1000, id="signed exponent"),
        pytest.param("1000e-3", 1, id="negative exponent"),
        pytest.param("1000m", 1, id="milli, whole"),
        pytest.param("1500m", Decimal("1.5"), id="milli, fraction"),
        pytest.param("1.5", Decimal("1.5"), id="decimal point"),
        pytest.param(".5", Decimal("0.5"), id="no whole part"),
        pytest.param("5.", 5, id="no fraction digits"),
        pytest.param("1.G", 10**9, id="point before a suffix (allowed upstream)"),
        pytest.param("1E", 10**18, id="exa, not an exponent"),
        pytest.param("100n", Decimal("1e-7"), id="nano"),
        pytest.param("1u", Decimal("1e-6"), id="micro"),
        pytest.param("0.0000000001", Decimal("1e-9"), id="below a nano rounds up to one"),
        pytest.param("-0.0000000001", Decimal("-1e-9"), id="rounds away from zero"),
        pytest.param("1.0000000001", Decimal("1.000000001"), id="rounded up at the ninth decimal"),
        pytest.param("99999999999999999999", MAX_INT64, id="capped at int64"),
        pytest.param("8Ei", MAX_INT64, id="binary capped at int64"),
        pytest.param("-99999999999999999999", -MAX_INT64, id="negative capped"),
        pytest.param("1e30", Decimal("1e30"), id="the exponent form is not capped"),
        pytest.param("1" + "0" * 5000 + "e-5000", 1, id="more digits than int() reads"),
        pytest.param("-", 0, id="a sign alone is zero upstream"),
        pytest.param(".", 0, id="a point alone is zero upstream"),
    ],
)
def test_a_quantity_has_the_value_kubernetes_gives_it(text: str, value: Decimal | int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("1K", id="upper-case kilo is no suffix"),
        pytest.param("1e", id="exponent without digits"),
        pytest.param("1ki", id="lower-case binary suffix"),
        pytest.param("1 ", id="a space (only JSON decoding trims)"),
        pytest.param(" 1", id="a leading space"),
        pytest.param("1.2.3", id="two points"),
        pytest.param("1e3e", id="letters after the exponent"),
        pytest.param("1e1.5", id="a fractional exponent"),
        pytest.param("--1", id="two signs"),
        pytest.param("abc", id="words"),
        pytest.param("0x10", id="hexadecimal"),
        pytest.param("1_000", id="underscores"),
        pytest.param("\uff11", id="a full-width digit"),
        pytest.param("1e99999999999999", id="an exponent out of range"),
    ],
)
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2", 2, id="a string"),
        pytest.param(" 2 ", 2, id="spaces around are trimmed"),
        pytest.param(2, 2, id="a JSON integer"),
        pytest.param(1e3, 1000, id="a JSON number with an exponent"),
        pytest.param(1e20, Decimal("1e20"), id="a JSON integer past 64 bits (decoded as a float)"),
        pytest.param(None, 0, id="null"),
    ],
)
def test_json_values_are_read_as_unmarshal_json_reads_them(value: object, expected: Decimal | int) -> None:
    assert quantity_value(value) == expected


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, float("inf"), float("nan")])
def test_json_values_that_are_no_quantity_are_refused(value: object) -> None:
    with pytest.raises(QuantityError):
        quantity_value(value)


@pytest.mark.parametrize(
    "text", ["1", "1k", "2Ki", "1e3", "1000m", "1.5", ".5", "+1E-3", "99999999999999999999", "7Ei"]
)
def test_every_quantity_of_the_published_grammar_parses(text: str) -> None:
    assert re.fullmatch(QUANTITY_PATTERN, text)
    parse_quantity(text)


def test_a_megabyte_of_digits_is_read_quickly() -> None:
    started = time.perf_counter()
    assert parse_quantity("9" * 1_000_000) == MAX_INT64
    assert parse_quantity("0." + "1" * 1_000_000 + "Ki") == Decimal("113.777777778")
    assert time.perf_counter() - started < 2  # linear: about 0.05 s
