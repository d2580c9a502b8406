"""Which metric names a PromQL expression reads: a regex view good enough for our queries."""

from __future__ import annotations

import re

PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})


def series_names(expr: str) -> set[str]:
    """The metric names `expr` reads: label values, label lists (by/on/...), function names
    and keywords removed. Durations ("5m") and numbers never match."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr)
    return set(words) - PROMQL_KEYWORDS
