"""Kubernetes Quantity strings for external metric values, in canonical form.

The HPA reads an external metric with ``MilliValue()``, i.e. ceil(value × 1000), and sums the
items. We round up to the milli-unit ourselves, as that reading would, and then emit the
canonical decimal-SI form of apimachinery's ``resource.Quantity`` (no fractional digits, the
largest exponent that is a multiple of 3): 0 → "0", 1.5 → "1500m", 2 → "2", 2000 → "2k".

Floats are converted through their shortest repr (``Decimal(repr(x))``), so 1.1 becomes
exactly 1100m and not 1101m from the binary error of 1.1 × 1000.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal
from typing import Final

MAX_MILLI: Final = 2**63 - 1
"""Largest milli-value an int64 holds; larger magnitudes saturate here."""

# Largest first: the canonical form takes the largest exponent that divides the value.
_DECIMAL_SUFFIXES: Final = (("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3))


def to_milli(value: float) -> int:
    """Milli-units of `value`, rounded up (towards +∞) as ``Quantity.MilliValue()`` reads it.

    Raises ValueError for NaN or ±Inf: the store never holds them, so one reaching here is a
    bug to surface, not a number to invent. Magnitudes beyond int64 saturate.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot express {value!r} as a Kubernetes Quantity")
    value = float(value)
    if value.is_integer():
        # Exact without Decimal (replica counts, queue depths, in-flight requests); a
        # publish formats thousands of these.
        milli = int(value) * 1000
    else:
        milli = int((Decimal(repr(value)) * 1000).to_integral_value(rounding=ROUND_CEILING))
    return max(-MAX_MILLI, min(MAX_MILLI, milli))


def format_milli(milli: int) -> str:
    """The canonical Quantity string of an integer number of milli-units."""
    if milli == 0:
        return "0"
    if milli % 1000:
        return f"{milli}m"
    whole = milli // 1000
    for suffix, exponent in _DECIMAL_SUFFIXES:
        scale = 10**exponent
        if whole % scale == 0:
            return f"{whole // scale}{suffix}"
    return str(whole)


def format_quantity(value: float) -> str:
    """The canonical Quantity string of `value`, rounded up to the milli-unit."""
    return format_milli(to_milli(value))
