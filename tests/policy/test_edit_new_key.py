"""`scaler.policy.edit`: a tuned field the file does not have yet is added to its block."""

from __future__ import annotations

import pytest

from scaler.policy.edit import EditError, edit_values


def test_an_absent_field_is_added_as_the_last_entry_of_its_block() -> None:
    text = "model: m\nsizing:\n  slotsPerReplica: 4   # -np 4\n  serviceSeconds: 10\nslo:\n  x: 1\n"
    edited = edit_values(text, {("sizing", "aimPercentile"): 99.0})
    assert edited == (
        "model: m\nsizing:\n  slotsPerReplica: 4   # -np 4\n  serviceSeconds: 10\n"
        "  aimPercentile: 99\nslo:\n  x: 1\n"
    )


def test_an_absent_field_after_a_nested_block_keeps_the_parents_indent() -> None:
    text = "a:\n  b:\n    c: 1\nd: 2\n"
    assert edit_values(text, {("a", "x"): 3}) == "a:\n  b:\n    c: 1\n  x: 3\nd: 2\n"


def test_an_absent_field_in_a_flow_mapping_is_refused() -> None:
    with pytest.raises(EditError, match="not a block"):
        edit_values("sizing: {slotsPerReplica: 4}\n", {("sizing", "aimPercentile"): 99.0})
