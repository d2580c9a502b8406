"""`scaler tune`'s search space: sized policies are tuned on what decides them."""

from __future__ import annotations

from scaler.simulation.tune import (
    AIM_PERCENTILES,
    Parameters,
    _point,
    apply,
    current_parameters,
    search_space,
)
from tests.builders import make_policy, make_target_policy


def test_a_sized_policy_is_searched_over_its_aim_and_hold_not_its_targets() -> None:
    """Targets are only a sized policy's fallback: every candidate keeps them, and the aim
    percentile takes the search instead."""
    policy = make_policy("deepseek-coder")
    points = search_space(policy, 100, seed=1)
    assert points[0] == current_parameters(policy)
    assert points[0].aim_percentile == policy.slo.percentile
    assert {p.target_factor for p in points} == {1.0}
    assert {p.aim_percentile for p in points} == set(AIM_PERCENTILES)
    tuned = apply(policy, Parameters(1.0, 0.0, 150.0, None, 99.0))
    assert tuned.sizing is not None
    assert tuned.sizing.aim_percentile == 99.0
    assert tuned.targets == policy.targets
    assert tuned.scale_down.stabilization_seconds == 150.0
    assert "aim p99" in Parameters(1.0, 0.0, 150.0, None, 99.0).describe()


def test_a_policy_without_sizing_keeps_the_target_search() -> None:
    policy = make_target_policy("deepseek-coder")
    points = search_space(policy, 100, seed=1)
    assert {p.aim_percentile for p in points} == {None}
    assert len({p.target_factor for p in points}) > 1


def test_shard_points_round_trip_and_older_four_entry_points_still_read() -> None:
    point = Parameters(1.0, 0.0, 60.0, 300.0, 99.8)
    assert _point(point.as_list()) == point
    assert _point([0.5, 0.0, 60.0, None]) == Parameters(0.5, 0.0, 60.0, None, None)
