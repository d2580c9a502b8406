"""scaler (real decide_all + emulated HPA) and the oracle, run through the engine."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.core import ClusterState, ModelPolicy, Node, Reason
from scaler.simulation.autoscaler import ClusterView, ModelView
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import SERVED, Simulation, simulate
from scaler.simulation.oracle import Oracle
from scaler.simulation.report import build_report
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.traces import TokenSizes, Trace, merge, poisson, sessions
from tests.builders import make_observation, make_policy
from tests.simulation.scenario_builders import make_scenario
from tests.simulation.test_engine import Fixed


def mixtral_sessions(seed: int = 3) -> Trace:
    return sessions(
        "mixtral-8x7b",
        session_rate=1 / 2400,
        requests_per_session=4,
        think_seconds=60,
        duration=7200,
        sizes=TokenSizes(300, 120),
        seed=seed,
    )


def small_scenario() -> tuple[list[ModelPolicy], Trace]:
    policies = [make_policy("tinyllama"), make_policy("mixtral-8x7b")]
    bursty = merge(
        [
            poisson("tinyllama", rate=0.05, duration=7200, sizes=TokenSizes(400, 120), seed=1),
            poisson(
                "tinyllama", rate=0.6, duration=600, sizes=TokenSizes(400, 120), seed=2
            ).shifted(3000),
        ]
    )
    return policies, merge([bursty, mixtral_sessions()])


def test_scaler_wakes_an_on_demand_model_and_holds_its_first_request() -> None:
    """Mixtral at zero: the activator holds the first request and writes 0 -> 1 at once
    (--scale-on-wake, as shipped), so it waits exactly the cold start."""
    policies = [make_policy("mixtral-8x7b")]
    trace = poisson("mixtral-8x7b", rate=0.01, duration=200, sizes=TokenSizes(100, 50), seed=2)
    prepared = make_scenario(trace.shifted(100), policies=policies)
    result = simulate(prepared, ScalerPolicy(prepared.policies))
    assert np.all(result.status == SERVED)
    first = int(np.argmin(result.arrival))
    wait = result.start[first] - result.arrival[first]
    assert wait == pytest.approx(40.0)  # the scenario's constant 40 s cold start, no scrape
    assert result.held[first]
    woken_at, model, replicas = result.spec_changes[0]
    assert (woken_at, model, replicas) == (result.arrival[first], 0, 1)


def test_without_scale_on_wake_the_first_request_waits_for_a_scrape_and_a_tick() -> None:
    """The metrics path alone (activator without --scale-on-wake): the pending gauge is
    seen at the next scrape (<= 15 s) and tick (<= 5 s), then the 40 s cold start."""

    class MetricsPathOnly(ScalerPolicy):
        def wake(self, model: str, now: float, spec_replicas: int) -> int | None:
            return None

    policies = [make_policy("mixtral-8x7b")]
    trace = poisson("mixtral-8x7b", rate=0.01, duration=200, sizes=TokenSizes(100, 50), seed=2)
    prepared = make_scenario(trace.shifted(100), policies=policies)
    result = Simulation(prepared, MetricsPathOnly(prepared.policies)).run()  # name: scaler
    first = int(np.argmin(result.arrival))
    wait = result.start[first] - result.arrival[first]
    assert 40.0 < wait <= 40.0 + 15.0 + 5.0 + 1e-6
    assert any(Reason.SCALE_FROM_ZERO in d.reasons for d in result.decisions)


def test_scaler_wakes_an_on_demand_model_to_the_decided_count_between_hpa_syncs() -> None:
    """Like the live actuator, the wake-up writes the decision (2), not 1, off an HPA sync."""
    policy = make_policy("mixtral-8x7b", scaleUp={"maxStep": 3})
    scaler = ScalerPolicy([policy])
    cluster = ClusterState(nodes=tuple(Node(f"n{i}", 90.0) for i in range(3)), pods=())

    def view(now: float, queue: int) -> ClusterView:
        observation = make_observation(
            policy.model, queue=queue, inflight=queue, rate=0.0, current=0, sample_time=now
        )
        model = ModelView(policy.model, observation, 0, 0, queue)
        return ClusterView(now, {policy.model: model}, cluster)

    assert scaler.tick(view(0.0, 0)) == {}  # the HPA syncs at 0 s, 15 s, ...
    assert scaler.tick(view(5.0, 10)) == {policy.model: 2}
    assert scaler.decisions[-1].desired_replicas == 2


def test_scaler_returns_an_idle_on_demand_model_to_zero() -> None:
    """After the idle period (900 s) with no traffic, scaler's actuator takes it to zero."""
    policies = [
        make_policy("mixtral-8x7b", scaleToZero={"idleSeconds": 900, "restartCostSeconds": 3600})
    ]
    trace = poisson("mixtral-8x7b", rate=0.01, duration=200, sizes=TokenSizes(100, 50), seed=2)
    prepared = make_scenario(trace, policies=policies, drain_seconds=1500)
    result = simulate(prepared, ScalerPolicy(prepared.policies))
    last_change = result.spec_changes[-1]
    assert last_change[2] == 0
    last_end = float(np.nanmax(result.end))
    assert last_change[0] >= last_end + 900.0 - 60.0  # idle counted from the last activity


def test_hpa_follows_the_decision_at_its_sync() -> None:
    """Always-on model under a burst: spec.replicas only ever takes a decided value."""
    policies, trace = small_scenario()
    prepared = make_scenario(trace, policies=policies)
    result = simulate(prepared, ScalerPolicy(prepared.policies))
    decided = {(d.time, d.model): d.desired_replicas for d in result.decisions}
    changes = [(t, prepared.models[m], r) for t, m, r in result.spec_changes]
    assert any(r > 1 for _, name, r in changes if name == "tinyllama")
    for t, name, replicas in changes:
        if name == "tinyllama":
            assert decided[(t, name)] == replicas
            assert t % 15.0 == 0.0  # written by the HPA at its 15 s sync


def test_oracle_costs_least_at_equal_or_better_slo() -> None:
    """The oracle's GiB-hours are no higher, and its SLO attainment no lower, than others'."""
    policies, trace = small_scenario()
    prepared = make_scenario(trace, policies=policies)
    oracle = build_report(simulate(prepared, Oracle(prepared))).total
    others = [
        build_report(simulate(prepared, make_autoscaler(name, prepared))).total
        for name in ("scaler", "hpa", "keda", "kpa")
    ]
    others.append(
        build_report(simulate(prepared, Fixed({"tinyllama": 3, "mixtral-8x7b": 1}))).total
    )
    for other in others:
        # Cheaper than the oracle is only allowed by serving worse.
        assert oracle.gib_hours <= other.gib_hours or oracle.slo_attainment > other.slo_attainment
        assert oracle.slo_attainment >= other.slo_attainment
    assert oracle.slo_attainment == pytest.approx(1.0)
