"""decide()'s per-policy plan: the policy's numbers read once, and never a stale copy."""

from __future__ import annotations

import gc
import math

import pytest

from scaler.core import ModelPolicy, ModelState, Signal, decide, decide_all
from scaler.core.decide import _PLANS, _ordered_plans, _plan
from scaler.core.keepalive import keep_alive_seconds
from tests.builders import homelab, make_observation, make_policy, make_target_policy

VARIANTS = [
    make_policy("mistral-7b"),
    make_policy("deepseek-coder"),
    make_policy("mixtral-8x7b"),
    make_policy("tinyllama"),
    make_target_policy("mistral-7b"),
    make_target_policy("mixtral-8x7b"),
    make_policy("mistral-7b", sizing={"aimPercentile": 90.0, "detectionSeconds": 7.5}),
    make_policy("mixtral-8x7b", scaleToZero={"restartCostSeconds": 12.0}),
    make_policy("tinyllama", scaleUp={"periodSeconds": 90.0}, targets={"queueDepth": None}),
    make_policy("mistral-7b", scaleDown={"stabilizationSeconds": 5.0}),
]


@pytest.mark.parametrize("policy", VARIANTS, ids=lambda p: p.model)
def test_plan_holds_what_the_policy_says(policy: ModelPolicy) -> None:
    """Every number of the plan is the policy's own, derived as the plain expression would."""
    plan = _plan(policy)
    sizing, zero = policy.sizing, policy.scale_to_zero
    assert plan.model == policy.model
    assert plan.on_demand is policy.on_demand
    assert plan.targets == tuple((s, t, s.grows_with_backlog) for s, t in policy.targets.items())
    assert plan.tolerance == policy.tolerance
    assert plan.stale_after == policy.data.stale_after_seconds
    assert plan.overdue_after == policy.cold_start.overdue_after_seconds
    assert plan.cold_start == policy.cold_start.seconds
    assert plan.trend_window == policy.cold_start.trend_window_seconds
    assert (plan.min_replicas, plan.max_replicas) == (policy.replicas.min, policy.replicas.max)
    assert (plan.need, plan.per_node) == (
        policy.placement.memory_gib,
        policy.placement.max_per_node,
    )
    up, down = policy.scale_up, policy.scale_down
    assert (plan.up_window, plan.up_period, plan.up_step) == (
        up.stabilization_seconds,
        up.period_seconds,
        up.max_step,
    )
    assert (plan.down_window, plan.down_period, plan.down_step) == (
        down.stabilization_seconds,
        down.period_seconds,
        down.max_step,
    )
    assert plan.change_period == max(up.period_seconds, down.period_seconds)
    assert plan.fallback == policy.fallback
    assert plan.activation_signals == (None if zero is None else zero.activation_signals)
    assert plan.activation_threshold == (0.0 if zero is None else zero.activation_threshold)
    assert plan.restart_cost == policy.restart_cost_seconds
    assert plan.idle_prior == (zero.idle_seconds if zero is not None else math.inf)
    # A sized policy's keep-alive floor is two detection times; without sizing, 30 s.
    floor = 30.0 if sizing is None else 2.0 * sizing.detection_seconds
    assert plan.keep_alive_floor == floor
    assert plan.keep_alive_prior == keep_alive_seconds(
        (), restart_cost_s=plan.restart_cost, prior_s=plan.idle_prior, floor_s=floor
    )
    assert plan.band == plan.tolerance + 1e-9
    assert plan.wait == policy.slo.queue_wait_seconds
    assert plan.miss == policy.sizing_miss_ratio
    assert plan.sized is (sizing is not None)
    if sizing is None:
        assert plan.release_hold == down.stabilization_seconds
        assert plan.shown_miss is None
        return
    reaction = sizing.detection_seconds + policy.cold_start.seconds
    assert plan.reaction == reaction
    assert plan.slots == sizing.slots_per_replica
    assert plan.service_prior == sizing.service_seconds
    assert plan.prior_requests == sizing.prior_requests
    assert plan.horizon == sizing.calibration_seconds
    assert plan.rate_horizon == sizing.rate_horizon_seconds
    assert plan.window == sizing.rate_window_seconds
    assert plan.service_cv == sizing.service_cv
    assert plan.release_hold == min(down.stabilization_seconds, max(reaction, 15.0))
    assert plan.release_floor == min(down.stabilization_seconds, 15.0)
    assert plan.shown_miss == (None if sizing.aim_percentile is None else policy.slo_miss_ratio)


def test_a_copy_of_a_policy_is_decided_on_its_own_numbers() -> None:
    """model_copy(update=...) copies the policy's __dict__ as it is: a plan kept on the
    policy object would come along stale. The plan is the copy's own."""
    policy = make_target_policy("mistral-7b")  # inflight target 4, tolerance 0.1
    observation = make_observation(queue=0, tokens=0, inflight=9, rate=0.0, current=2)
    first, _ = decide(observation, policy, ModelState(), homelab(), now=0.0)
    tolerant = policy.model_copy(update={"tolerance": 0.5})
    second, _ = decide(observation, tolerant, ModelState(), homelab(), now=0.0)
    assert (first.demand, second.demand) == (3, 2)  # 2.25 replicas' worth: 12.5 % over 2
    assert _plan(policy) is not _plan(tolerant)


def test_a_plan_goes_with_its_policy() -> None:
    """The cache holds the plans of live policies only."""
    policy = make_policy("tinyllama")
    _plan(policy)
    key = id(policy)
    assert key in _PLANS
    del policy
    gc.collect()
    assert key not in _PLANS


def test_the_fleet_order_is_reused_only_for_the_same_live_policies() -> None:
    """decide_all()'s cached order serves the same policies again, and never another fleet:
    one with a policy more, in another order, or a policy replaced (possibly at the gone
    one's address)."""
    fleet = [make_policy("mixtral-8x7b"), make_policy("tinyllama"), make_policy("mistral-7b")]
    order = _ordered_plans(fleet)
    assert [p.model for p in order] == ["mistral-7b", "tinyllama", "mixtral-8x7b"]
    assert _ordered_plans(iter(fleet)) is order
    assert [p.model for p in _ordered_plans([*fleet, make_policy("deepseek-coder")])] == [
        "deepseek-coder",
        "mistral-7b",
        "tinyllama",
        "mixtral-8x7b",
    ]
    for i in range(3):  # a new policy may take the address of the one it replaces
        fleet[1] = make_policy("tinyllama", model=f"tinyllama-{i}")
        gc.collect()
        names = [p.model for p in _ordered_plans(fleet)]
        assert names == ["mistral-7b", f"tinyllama-{i}", "mixtral-8x7b"]
    decisions, _ = decide_all({}, fleet, {}, homelab(), now=0.0)
    assert list(decisions) == ["mistral-7b", "tinyllama-2", "mixtral-8x7b"]


def test_a_copy_of_the_targets_with_an_update_reports_the_update() -> None:
    """``Targets.model_copy(update=...)`` used to carry the original's cached target list, so
    a plan built from the copy sized on the old targets."""
    targets = make_target_policy("mistral-7b").targets
    assert targets.queue_depth is not None
    targets.items()  # read once, as a plan does
    copy = targets.model_copy(update={"queue_depth": targets.queue_depth * 3})
    assert dict(copy.items())[Signal.QUEUE_DEPTH] == targets.queue_depth * 3
    assert dict(targets.items())[Signal.QUEUE_DEPTH] == targets.queue_depth
