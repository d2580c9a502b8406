"""The set-ups an operator would pick instead of scaler: hpa-warm and keda-http."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.simulation.baselines import HpaWarmBaseline, KedaHttpBaseline
from scaler.simulation.comparison import POLICY_NAMES, make_autoscaler
from scaler.simulation.engine import SERVED, simulate
from scaler.simulation.report import build_report
from scaler.simulation.scenario import PreparedScenario
from scaler.simulation.traces import TokenSizes, poisson, sessions
from tests.builders import make_policy
from tests.simulation.scenario_builders import make_scenario


def mixtral_scenario(seed: int = 4) -> PreparedScenario:
    trace = sessions(
        "mixtral-8x7b",
        session_rate=1 / 1800,
        requests_per_session=3,
        think_seconds=60,
        duration=5400,
        sizes=TokenSizes(200, 80),
        seed=seed,
    )
    return make_scenario(trace, policies=[make_policy("mixtral-8x7b")])


def test_both_are_comparable_by_name() -> None:
    """`--baseline hpa-warm,keda-http` builds them."""
    prepared = mixtral_scenario()
    assert {"hpa-warm", "keda-http"} <= set(POLICY_NAMES)
    assert isinstance(make_autoscaler("hpa-warm", prepared), HpaWarmBaseline)
    assert isinstance(make_autoscaler("keda-http", prepared), KedaHttpBaseline)


def test_hpa_warm_keeps_the_on_demand_model_at_one_and_serves_everything() -> None:
    """Mixtral starts warm at 1 and never goes below: no request waits for a cold start,
    and it pays for the whole run."""
    prepared = mixtral_scenario()
    result = simulate(prepared, make_autoscaler("hpa-warm", prepared))
    assert np.all(result.status == SERVED)
    assert result.initial_replicas == (1,)
    assert all(replicas >= 1 for _, _, replicas in result.spec_changes)
    assert not result.held.any(), "never at zero: nothing is held for a cold start"
    report = build_report(result).models["mixtral-8x7b"]
    assert report.replica_seconds >= result.duration - 1e-6


def test_keda_http_holds_at_zero_wakes_on_the_first_request_and_sleeps_after_300_s() -> None:
    """The interceptor holds the first request and activates 0 -> 1 at once (it waits the
    40 s cold start only); the model goes to zero 300 s (scaledownPeriod) after the last."""
    trace = poisson("mixtral-8x7b", rate=0.02, duration=100, sizes=TokenSizes(100, 40), seed=5)
    prepared = make_scenario(trace.shifted(500), policies=[make_policy("mixtral-8x7b")])
    result = simulate(prepared, make_autoscaler("keda-http", prepared))
    assert result.holds_requests
    assert np.all(result.status == SERVED)
    first = int(np.argmin(result.arrival))
    assert result.start[first] - result.arrival[first] == pytest.approx(40.0)
    woken_at, _, replicas = result.spec_changes[0]
    assert (woken_at, replicas) == (result.arrival[first], 1)
    last_end = float(np.nanmax(result.end))
    to_zero = [t for t, _, r in result.spec_changes if r == 0]
    assert to_zero, "it goes back to zero"
    assert last_end + 300.0 - 15.0 <= to_zero[-1] <= last_end + 300.0 + 15.0
