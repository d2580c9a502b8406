"""coldStart.uncachedSeconds: a first start after the fetch is never taken for a stuck one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scaler.core import ClusterState, ModelState, Reason, decide
from tests.builders import make_observation, make_policy

NO_CLUSTER = ClusterState()  # placement unknown: no cap


def _overdue_at(now: float, **cold_start: float) -> bool:
    policy = make_policy(replicas={"max": 10}, coldStart=cold_start)
    observation = make_observation(queue=12, current=2, ready=1)
    decision, _ = decide(observation, policy, ModelState(starting_since=0.0), NO_CLUSTER, now)
    return Reason.COLD_START_OVERDUE in decision.reasons


def test_a_start_within_uncached_seconds_is_not_overdue() -> None:
    """mistral-7b: 90 s x 3 = 270 s; with uncachedSeconds 400 a start is held until 400 s."""
    assert _overdue_at(271.0)
    assert not _overdue_at(271.0, uncachedSeconds=400)
    assert not _overdue_at(400.0, uncachedSeconds=400)
    assert _overdue_at(401.0, uncachedSeconds=400)


def test_uncached_seconds_below_the_factor_budget_changes_nothing() -> None:
    """uncachedSeconds 110 under 90 s x 3: the budget stays 270 s."""
    policy = make_policy(coldStart={"uncachedSeconds": 110})
    assert policy.cold_start.overdue_after_seconds == 270
    assert not _overdue_at(270.0, uncachedSeconds=110)
    assert _overdue_at(271.0, uncachedSeconds=110)


def test_uncached_faster_than_cached_is_refused() -> None:
    """Reading from the volume cannot beat the page cache: a validation error says so."""
    with pytest.raises(ValidationError, match="uncachedSeconds"):
        make_policy(coldStart={"uncachedSeconds": 30})
