"""Canonical Quantity strings: docs/api.md's table, rounded up as MilliValue reads, round-trip."""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity

from scaler.api.quantity import MAX_MILLI, format_milli, format_quantity, to_milli

# Quantity grammar (apimachinery quantity.go): signedNumber then a suffix.
_GRAMMAR = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse(quantity: str) -> Decimal:
    """A small parser of the Quantity grammar (decimal SI and exponent forms)."""
    found = _GRAMMAR.match(quantity)
    assert found is not None, f"{quantity!r} is not a Quantity"
    suffix = found.group("suffix") or ""
    exponent = int(suffix[1:]) if suffix[:1] in ("e", "E") and len(suffix) > 1 else _DECIMAL[suffix]
    return Decimal(found.group("number")).scaleb(exponent)


def milli_value(quantity: str) -> int:
    """What the HPA reads: ceil(q × 1000)."""
    return int((parse(quantity) * 1000).to_integral_value(rounding=ROUND_CEILING))


@pytest.mark.parametrize(
    ("milli", "expected"),
    [
        (0, "0"),
        (500, "500m"),
        (-500, "-500m"),
        (1500, "1500m"),
        (2000, "2"),
        (1_500_000, "1500"),
        (2_000_000, "2k"),
        (1_000_000_000, "1M"),
    ],
)
def test_reference_table(milli: int, expected: str) -> None:
    """The canonical strings of the table in docs/api.md ("Quantities")."""
    assert format_milli(milli) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "0"), (1.5, "1500m"), (3.0, "3"), (0.0001, "1m"), (1.1, "1100m"), (-0.0004, "0")],
)
def test_floats_round_up_to_the_milli(value: float, expected: str) -> None:
    """Finer than 1m rounds up (towards +inf); 1.1 is exactly 1100m, not 1101m."""
    assert format_quantity(value) == expected


def test_a_true_zero_is_the_string_zero() -> None:
    """A measured 0 is emitted as "0" (an item, not a missing value)."""
    assert format_quantity(0.0) == "0"
    assert format_quantity(-0.0) == "0"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_raise(value: float) -> None:
    """NaN and ±Inf are never emitted: they are a bug upstream of the API."""
    with pytest.raises(ValueError, match="Quantity"):
        format_quantity(value)


def test_huge_values_saturate_at_int64() -> None:
    """A value beyond int64 milli-units saturates instead of overflowing the HPA's reading."""
    assert to_milli(1e300) == MAX_MILLI
    assert to_milli(-1e300) == -MAX_MILLI


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_round_trip_reads_back_the_ceiled_milli_value(value: float) -> None:
    """Our string reads back as the value rounded up to the next milli-unit, never below it."""
    text = format_quantity(value)
    exact_milli = Decimal(repr(value)) * 1000
    served_milli = parse(text) * 1000
    assert served_milli == served_milli.to_integral_value()
    assert served_milli - 1 < exact_milli <= served_milli
    assert milli_value(text) == to_milli(value)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_output_agrees_with_the_official_client_parser(milli: int) -> None:
    """kubernetes.utils.parse_quantity reads our string back as milli / 1000."""
    assert parse_quantity(format_milli(milli)) == Decimal(milli) / 1000  # type: ignore[no-untyped-call]


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_output_is_canonical(milli: int) -> None:
    """No fractional digits, and a decimal suffix only when it divides the value exactly."""
    text = format_milli(milli)
    assert "." not in text
    found = _GRAMMAR.match(text)
    assert found is not None
    number = int(found.group("number"))
    suffix = found.group("suffix") or ""
    if suffix in ("", "k", "M", "G", "T", "P"):
        assert number % 1000 != 0 or number == 0, f"{text} should use a larger suffix"
    if suffix == "m":
        assert number % 1000 != 0


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_whole_values_take_the_decimal_paths_result(whole: int) -> None:
    """A whole float (formatted without Decimal) gives what the Decimal reading gives."""
    value = float(whole)
    exact = int((Decimal(repr(value)) * 1000).to_integral_value(rounding=ROUND_CEILING))
    assert to_milli(value) == max(-MAX_MILLI, min(MAX_MILLI, exact))
