"""decide(): one behaviour per test, each step of the pipeline.

These pin the per-signal target steps, so they use policies without a ``sizing`` section
(``make_target_policy``); the SLO sizing step has its own tests in test_sizing.py.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import ModelState, Pod, Reason, Signal, decide, decide_all
from scaler.core.decide import _dominant
from tests.builders import homelab, make_observation
from tests.builders import make_target_policy as make_policy

NO_CLUSTER = homelab().__class__()  # an empty ClusterState: placement unknown


def test_demand_is_ceil_of_signal_over_target_and_max_across_signals() -> None:
    """Each signal proposes ceil(value/target); the largest proposal wins."""
    policy = make_policy()  # mistral: queue 2, tokens 9, inflight 4, rate 0.15
    observation = make_observation(queue=5, tokens=10, inflight=4, rate=0.1, current=1)
    decision, _ = decide(observation, policy, ModelState(), NO_CLUSTER, now=0.0)
    assert decision.demands == {
        Signal.QUEUE_DEPTH: 3,
        Signal.TOKENS_PER_SECOND: 2,
        Signal.INFLIGHT_REQUESTS: 1,
        Signal.REQUEST_RATE: 1,
    }
    assert decision.demand == 3
    assert decision.desired_replicas == 3
    assert decision.reasons[0] is Reason.DEMAND


def test_exact_multiple_of_target_is_not_rounded_up_by_float_noise() -> None:
    """0.3 req/s at 0.15 per replica is 2 replicas, not 3."""
    policy = make_policy(
        targets={"queueDepth": None, "tokensPerSecond": None, "inflightRequests": None}
    )
    decision, _ = decide(
        make_observation(rate=0.1 + 0.2, current=2), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert decision.demands[Signal.REQUEST_RATE] == 2


def test_within_tolerance_keeps_current_count() -> None:
    """A ratio within 10 % of the current count proposes no change."""
    policy = make_policy()
    observation = make_observation(queue=6.5, current=3)  # 3.25 replicas' worth: +8 %
    decision, _ = decide(observation, policy, ModelState(), NO_CLUSTER, 0.0)
    assert decision.desired_replicas == 3
    assert Reason.WITHIN_TOLERANCE in decision.reasons


def test_outside_tolerance_scales() -> None:
    """A ratio 20 % over the current count scales up."""
    policy = make_policy(replicas={"max": 10})
    decision, _ = decide(
        make_observation(queue=7.2, current=3), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert decision.desired_replicas == 4


def test_no_data_holds_current_count_and_counts_failures() -> None:
    """With no signal at all the count is held and the failure counter grows."""
    observation = make_observation(queue=None, tokens=None, inflight=None, rate=None, current=3)
    decision, state = decide(observation, make_policy(), ModelState(), NO_CLUSTER, 0.0)
    assert decision.desired_replicas == 3
    assert decision.reasons == (Reason.NO_DATA,)
    assert decision.demand is None
    assert state.consecutive_failures == 1


def test_stale_data_holds_even_when_it_says_zero() -> None:
    """A zero read 2 minutes ago is not evidence of no load."""
    observation = make_observation(current=3, sample_time=0.0)
    decision, _ = decide(observation, make_policy(), ModelState(), NO_CLUSTER, now=120.0)
    assert decision.desired_replicas == 3
    assert decision.reasons == (Reason.STALE_DATA,)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_nan_inf_and_negative_values_count_as_missing(bad: float) -> None:
    """Garbage from Prometheus is treated as no data, never as a reading."""
    observation = make_observation(queue=bad, tokens=bad, inflight=bad, rate=bad, current=2)
    decision, _ = decide(observation, make_policy(), ModelState(), NO_CLUSTER, 0.0)
    assert decision.desired_replicas == 2
    assert Reason.NO_DATA in decision.reasons


def test_partial_data_may_scale_up_but_never_down() -> None:
    """A missing signal can hide load: the present ones may raise the count, not lower it."""
    policy = make_policy(scaleDown={"stabilizationSeconds": 0}, replicas={"max": 10})
    down, _ = decide(make_observation(queue=None, current=3), policy, ModelState(), NO_CLUSTER, 0.0)
    assert down.desired_replicas == 3
    assert Reason.PARTIAL_DATA in down.reasons
    up, _ = decide(
        make_observation(queue=None, rate=0.75, current=3), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert up.desired_replicas == 5


def test_fallback_at_least_raises_after_n_failures_only() -> None:
    """fallback atLeast N applies once afterFailures ticks in a row had no data."""
    policy = make_policy(fallback={"afterFailures": 3, "mode": "atLeast", "replicas": 2})
    observation = make_observation(queue=None, tokens=None, inflight=None, rate=None, current=1)
    state = ModelState()
    results = []
    for tick in range(3):
        decision, state = decide(observation, policy, state, NO_CLUSTER, float(tick))
        results.append(decision.desired_replicas)
    assert results == [1, 1, 2]
    assert Reason.FALLBACK in decision.reasons


def test_one_good_tick_resets_failures() -> None:
    """The failure count restarts after a successful read."""
    state = ModelState(consecutive_failures=7)
    _, state = decide(make_observation(), make_policy(), state, NO_CLUSTER, 0.0)
    assert state.consecutive_failures == 0


def test_scale_down_waits_for_the_down_window() -> None:
    """A dip must last the stabilization window (300 s) before the count drops."""
    policy = make_policy()
    state = ModelState()
    _, state = decide(make_observation(queue=6, current=3), policy, state, NO_CLUSTER, 0.0)
    early, state = decide(make_observation(queue=0, current=3), policy, state, NO_CLUSTER, 100.0)
    assert early.desired_replicas == 3
    assert Reason.STABILIZED_DOWN in early.reasons
    late, _ = decide(make_observation(queue=0, current=3), policy, state, NO_CLUSTER, 301.0)
    assert late.desired_replicas == 2  # maxStep 1 down


def test_a_fresh_state_holds_the_running_count_for_the_down_window() -> None:
    """After a restart without state, 3 running replicas are not cut at once to demand 1."""
    policy = make_policy()
    first, state = decide(
        make_observation(queue=1, current=3), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert first.desired_replicas == 3
    assert Reason.STABILIZED_DOWN in first.reasons
    later, _ = decide(make_observation(queue=1, current=3), policy, state, NO_CLUSTER, 301.0)
    assert later.desired_replicas == 2


def test_scale_up_stabilization_takes_lowest_recommendation() -> None:
    """With an up window, a burst must last the window before it adds replicas."""
    policy = make_policy(scaleUp={"stabilizationSeconds": 30})
    state = ModelState()
    _, state = decide(make_observation(queue=0, current=1), policy, state, NO_CLUSTER, 0.0)
    burst, state = decide(make_observation(queue=6, current=1), policy, state, NO_CLUSTER, 10.0)
    assert burst.desired_replicas == 1
    assert Reason.STABILIZED_UP in burst.reasons
    lasting, _ = decide(make_observation(queue=6, current=1), policy, state, NO_CLUSTER, 31.0)
    assert lasting.desired_replicas == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=40))
def test_the_kept_recommendations_give_every_window_its_lowest_and_highest(
    values: list[int],
) -> None:
    """The history kept between ticks is shorter, never different: for every window that
    ends now, its lowest and highest recommendation are those of the whole history."""
    history = tuple((float(t), v) for t, v in enumerate(values))
    kept = _dominant(history)
    assert kept[-1] == history[-1]
    assert set(kept) <= set(history)
    assert list(kept) == sorted(kept)
    for cutoff in range(-1, len(values)):
        inside = [v for t, v in history if t > cutoff]
        inside_kept = [v for t, v in kept if t > cutoff]
        if inside:
            assert (min(inside_kept), max(inside_kept)) == (min(inside), max(inside))


def test_a_load_that_moves_every_tick_keeps_a_history_of_its_levels_not_its_ticks() -> None:
    """Demand cycling over 3 levels for 60 ticks keeps at most one entry per level and
    direction, where every tick's recommendation is inside the 300 s down window."""
    policy = make_policy(replicas={"max": 10})
    state = ModelState()
    for tick in range(60):
        queue = 2.0 * (1 + tick % 3)  # demand 1, 2, 3, 1, 2, 3, ...
        _, state = decide(
            make_observation(queue=queue, current=2), policy, state, NO_CLUSTER, 5.0 * tick
        )
    assert 1 <= len(state.recommendations) <= 4
    assert {r for _, r in state.recommendations} >= {1, 3}


def test_step_limit_bounds_one_decision() -> None:
    """At most maxStep (2) replicas are added in one decision."""
    decision, _ = decide(
        make_observation(queue=20, current=1),
        make_policy(replicas={"max": 10}),
        ModelState(),
        NO_CLUSTER,
        0.0,
    )
    assert decision.desired_replicas == 3
    assert Reason.STEP_LIMITED in decision.reasons


def test_step_limit_counts_changes_within_the_period() -> None:
    """Two replicas seen added at t=5 use up the 15 s scale-up budget until t=20."""
    policy = make_policy(replicas={"max": 10})
    first, state = decide(
        make_observation(queue=20, current=1), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert first.desired_replicas == 3
    blocked, state = decide(
        make_observation(queue=20, rate=2.0, current=3), policy, state, NO_CLUSTER, 5.0
    )
    assert blocked.desired_replicas == 3
    assert Reason.STEP_LIMITED in blocked.reasons
    later, _ = decide(
        make_observation(queue=20, rate=2.0, current=3), policy, state, NO_CLUSTER, 20.0
    )
    assert later.desired_replicas == 5


def test_a_decision_not_applied_yet_is_repeated_not_cancelled() -> None:
    """Until the HPA applies 3 -> 2, every tick keeps asking for 2 (nothing counts it yet)."""
    policy = make_policy(scaleDown={"stabilizationSeconds": 0})
    state = ModelState()
    for now in (0.0, 5.0, 10.0):
        decision, state = decide(
            make_observation(queue=4, current=3), policy, state, NO_CLUSTER, now
        )
        assert decision.desired_replicas == 2
        assert Reason.STEP_LIMITED not in decision.reasons


def test_bounds_cap_at_max_and_raise_to_min() -> None:
    """replicas.max and replicas.min bound the result."""
    policy = make_policy(scaleUp={"maxStep": 10})
    high, _ = decide(make_observation(queue=40, current=2), policy, ModelState(), NO_CLUSTER, 0.0)
    assert high.desired_replicas == 3
    assert Reason.BOUNDED_MAX in high.reasons
    low, _ = decide(make_observation(current=0), policy, ModelState(), NO_CLUSTER, 0.0)
    assert low.desired_replicas == 1
    assert Reason.BOUNDED_MIN in low.reasons


def test_starting_replicas_absorb_backlog_growth() -> None:
    """While a replica loads, a growing queue does not request yet more replicas."""
    policy = make_policy(replicas={"max": 10})
    observation = make_observation(queue=12, inflight=16, current=2, ready=1)
    decision, _ = decide(observation, policy, ModelState(), NO_CLUSTER, 0.0)
    assert decision.desired_replicas == 2
    assert Reason.COLD_START_HOLD in decision.reasons


def test_arrival_rate_still_scales_during_cold_start() -> None:
    """The hold applies to backlog signals only: more arrivals still add replicas."""
    policy = make_policy(replicas={"max": 10})
    observation = make_observation(queue=12, rate=0.6, current=2, ready=1)
    decision, _ = decide(observation, policy, ModelState(), NO_CLUSTER, 0.0)
    assert decision.desired_replicas == 4


def test_overdue_cold_start_lifts_the_hold() -> None:
    """A replica stuck starting for 3x its cold start no longer blocks scaling."""
    policy = make_policy(replicas={"max": 10})
    state = ModelState(starting_since=0.0)
    observation = make_observation(queue=12, current=2, ready=1)
    decision, _ = decide(observation, policy, state, NO_CLUSTER, now=271.0)  # 3 x 90 s = 270 s
    assert Reason.COLD_START_OVERDUE in decision.reasons
    assert decision.desired_replicas == 4


def test_rising_trend_is_projected_cold_start_ahead() -> None:
    """A steadily rising rate adds the replicas it will need once new ones are ready."""
    policy = make_policy(replicas={"max": 10}, scaleUp={"maxStep": 10})
    state = ModelState()
    # request rate rises 0.02 req/s every 5 s -> +0.36 req/s over the 90 s cold start
    for tick in range(12):
        now = tick * 5.0
        decision, state = decide(
            make_observation(rate=0.15 + 0.02 * tick, current=1), policy, state, NO_CLUSTER, now
        )
    level = (0.15 + 0.22) / 0.15
    assert decision.demands[Signal.REQUEST_RATE] == math.ceil(level)
    assert decision.desired_replicas == math.ceil(level + 0.02 / 5 * 90 / 0.15)
    assert Reason.TREND_PROJECTED in decision.reasons


def test_trend_is_the_same_on_unix_time() -> None:
    """The live loop's clock is Unix time (~1.8e9 s): the slope must not lose precision."""
    policy = make_policy(replicas={"max": 10}, scaleUp={"maxStep": 10})
    results = []
    for origin in (0.0, 1.8e9):
        state = ModelState()
        for tick in range(12):
            decision, state = decide(
                make_observation(rate=0.15 + 0.02 * tick, current=1),
                policy,
                state,
                NO_CLUSTER,
                origin + tick * 5.0,
            )
        results.append((decision.desired_replicas, decision.reasons))
    assert results[0] == results[1]
    assert Reason.TREND_PROJECTED in results[1][1]


def test_a_rise_smaller_than_one_replica_is_not_projected() -> None:
    """+0.8 replicas' worth over the 60 s window is a wobble at low rates, not a trend."""
    policy = make_policy(replicas={"max": 10}, scaleUp={"maxStep": 10})
    state = ModelState()
    for tick in range(12):
        decision, state = decide(
            make_observation(rate=0.15 + 0.01 * tick, current=1),
            policy,
            state,
            NO_CLUSTER,
            tick * 5.0,
        )
    assert Reason.TREND_PROJECTED not in decision.reasons


def test_falling_trend_is_not_projected() -> None:
    """Projection only ever raises demand: a fall waits for the down window."""
    policy = make_policy()
    state = ModelState()
    for tick in range(12):
        decision, state = decide(
            make_observation(rate=0.45 - 0.02 * tick, current=3),
            policy,
            state,
            NO_CLUSTER,
            tick * 5.0,
        )
    assert Reason.TREND_PROJECTED not in decision.reasons


def test_on_demand_wakes_on_activation_at_zero() -> None:
    """One held request at zero replicas starts Mixtral at once."""
    policy = make_policy("mixtral-8x7b")
    decision, state = decide(
        make_observation("mixtral-8x7b", queue=1, current=0), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert decision.desired_replicas == 1
    assert Reason.SCALE_FROM_ZERO in decision.reasons
    assert state.last_active == 0.0


def test_on_demand_stays_at_zero_without_activity() -> None:
    """No activity at zero: stay at zero."""
    policy = make_policy("mixtral-8x7b")
    decision, _ = decide(
        make_observation("mixtral-8x7b", current=0), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert decision.desired_replicas == 0
    assert decision.reasons[-1] is Reason.IDLE_AT_ZERO


def test_activation_threshold_is_strict() -> None:
    """A signal equal to the threshold does not activate (KEDA: value > activationThreshold)."""
    policy = make_policy("mixtral-8x7b", scaleToZero={"activationThreshold": 1})
    decision, _ = decide(
        make_observation("mixtral-8x7b", queue=1, current=0), policy, ModelState(), NO_CLUSTER, 0.0
    )
    assert decision.desired_replicas == 0


def test_on_demand_goes_to_zero_only_after_idle_period() -> None:
    """Mixtral stays at one replica until 900 idle seconds have passed, then jumps to zero."""
    policy = make_policy(
        "mixtral-8x7b", scaleToZero={"idleSeconds": 900, "restartCostSeconds": 3600}
    )
    state = ModelState()
    obs = make_observation("mixtral-8x7b", current=1)
    before, state = decide(obs, policy, state, NO_CLUSTER, 0.0)
    assert before.desired_replicas == 1
    assert Reason.IDLE_PENDING in before.reasons
    almost, state = decide(obs, policy, state, NO_CLUSTER, 899.0)
    assert almost.desired_replicas == 1
    gone, _ = decide(obs, policy, state, NO_CLUSTER, 900.0)
    assert gone.desired_replicas == 0
    assert Reason.SCALE_TO_ZERO in gone.reasons


def test_data_gap_restarts_the_idle_period() -> None:
    """Idleness is only counted while it is observed: an outage restarts the clock."""
    policy = make_policy(
        "mixtral-8x7b", scaleToZero={"idleSeconds": 900, "restartCostSeconds": 3600}
    )
    idle = make_observation("mixtral-8x7b", current=1)
    missing = make_observation(
        "mixtral-8x7b", queue=None, tokens=None, inflight=None, rate=None, current=1
    )
    _, state = decide(idle, policy, ModelState(), NO_CLUSTER, 0.0)
    _, state = decide(missing, policy, state, NO_CLUSTER, 600.0)
    after, state = decide(idle, policy, state, NO_CLUSTER, 1000.0)
    assert after.desired_replicas == 1
    gone, _ = decide(idle, policy, state, NO_CLUSTER, 1900.0)
    assert gone.desired_replicas == 0


def test_never_scale_to_zero_while_a_replica_is_starting() -> None:
    """A pod still loading is not deleted by the idle rule (kserve#1247)."""
    policy = make_policy("mixtral-8x7b", scaleToZero={"idleSeconds": 10})
    state = ModelState(idle_since=0.0)
    decision, _ = decide(
        make_observation("mixtral-8x7b", current=1, ready=0), policy, state, NO_CLUSTER, 100.0
    )
    assert decision.desired_replicas == 1


def test_placement_cap_limits_to_what_fits() -> None:
    """Mixtral (30 GiB) cannot get a replica where no node has 30 GiB free."""
    policy = make_policy("mixtral-8x7b")
    cluster = homelab(
        Pod("mistral-7b", "ms01-1", 80.0),
        Pod("mistral-7b", "ms01-2", 80.0),
        Pod("mistral-7b", "ms01-3", 80.0),
    )
    decision, _ = decide(
        make_observation("mixtral-8x7b", queue=3, current=0), policy, ModelState(), cluster, 0.0
    )
    assert decision.placement_cap == 0
    assert decision.desired_replicas == 0
    assert Reason.PLACEMENT_CAP in decision.reasons


def test_placement_cap_never_removes_ready_replicas() -> None:
    """The cap keeps replicas that run, even if the cluster says nothing more fits."""
    policy = make_policy()
    cluster = homelab(
        Pod("mistral-7b", "ms01-1", 11.0), Pod("mistral-7b", "ms01-2", 11.0), memory_gib=11.0
    )
    observation = make_observation(queue=10, current=3, ready=2)
    decision, _ = decide(observation, policy, ModelState(), cluster, 0.0)
    assert decision.placement_cap == 3
    assert decision.desired_replicas == 3


def test_decide_all_reserves_memory_between_models() -> None:
    """Two models cannot both count on the same free memory in one tick."""
    cluster = homelab(memory_gib=35.0)
    mixtral = make_policy("mixtral-8x7b", replicas={"max": 2})
    coder = make_policy("deepseek-coder", replicas={"max": 3}, scaleUp={"maxStep": 3})
    observations = {
        "deepseek-coder": make_observation("deepseek-coder", queue=6, current=0),
        "mixtral-8x7b": make_observation("mixtral-8x7b", queue=1, current=0),
    }
    decisions, _ = decide_all(observations, [mixtral, coder], {}, cluster, 0.0)
    # deepseek (always-on, decided first) takes 15 GiB on each node: 20 GiB left < 30 GiB
    assert decisions["deepseek-coder"].desired_replicas == 3
    assert decisions["mixtral-8x7b"].placement_cap == 0
    assert decisions["mixtral-8x7b"].desired_replicas == 0


def test_decision_serializes_to_json() -> None:
    """A Decision is JSON with string signal and reason names."""
    decision, _ = decide(make_observation(queue=5), make_policy(), ModelState(), homelab(), 0.0)
    document = json.loads(json.dumps(decision.to_json()))
    assert document["desiredReplicas"] == 3
    assert document["signals"]["queue_depth"] == 5
    assert document["reasons"][0] == "Demand"
    assert document["placementCap"] == 3


def test_state_round_trips_through_json() -> None:
    """State survives a restart: to_json then from_json gives the same state."""
    _, state = decide(make_observation(queue=5), make_policy(), ModelState(), NO_CLUSTER, 10.0)
    assert ModelState.from_json(json.loads(json.dumps(state.to_json()))) == state


@pytest.mark.parametrize(
    "document",
    [{"recommendations": "x"}, {"lastActive": "yesterday"}, {"consecutiveFailures": True}],
)
def test_malformed_state_is_a_value_error(document: dict[str, object]) -> None:
    """A corrupted annotation is reported, not half-loaded."""
    with pytest.raises(ValueError, match="malformed model state"):
        ModelState.from_json(document)
