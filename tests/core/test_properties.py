"""Invariants of decide(), checked with hypothesis over the shipped policies.

Each shipped policy is sized by the SLO queueing model; its per-signal targets are the
fallback. Both paths are checked: `policies` draws the shipped policies and their
targets-only variants (no ``sizing`` section).
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import (
    ClusterState,
    ModelPolicy,
    ModelState,
    Node,
    Observation,
    Pod,
    Reason,
    Signal,
    decide,
)
from scaler.policy import load_policies
from tests.builders import POLICIES, Driver, make_policy

SHIPPED = {p.model: p for p in load_policies(POLICIES)}
TARGETS_ONLY = {name: p.model_copy(update={"sizing": None}) for name, p in SHIPPED.items()}
SIZED = sorted(SHIPPED.values(), key=lambda p: p.model)
ALWAYS_ON_TARGETS = [p for p in TARGETS_ONLY.values() if not p.on_demand]

policies = st.sampled_from([*SIZED, *sorted(TARGETS_ONLY.values(), key=lambda p: p.model)])
values = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
maybe_values = st.one_of(st.none(), values)


@st.composite
def signal_maps(draw: st.DrawFn, allow_missing: bool = True) -> dict[Signal, float]:
    source = maybe_values if allow_missing else values
    drawn = {s: draw(source) for s in Signal}
    return {s: v for s, v in drawn.items() if v is not None}


@st.composite
def clusters(draw: st.DrawFn) -> ClusterState:
    if draw(st.booleans()):
        return ClusterState()  # placement unknown
    nodes = tuple(Node(f"n{i}", draw(st.floats(8.0, 128.0))) for i in range(3))
    pods = tuple(
        Pod(
            draw(st.sampled_from(sorted(SHIPPED))),
            draw(st.sampled_from(["n0", "n1", "n2", None])),
            7.0,
        )
        for _ in range(draw(st.integers(0, 6)))
    )
    return ClusterState(nodes=nodes, pods=pods)


@st.composite
def states(draw: st.DrawFn) -> ModelState:
    """States reached by real ticks: a short random history through decide()."""
    policy = draw(policies)
    state = ModelState()
    for tick in range(draw(st.integers(0, 8))):
        observation = Observation(
            policy.model, draw(signal_maps()), None, draw(st.integers(0, 4)), 0
        )
        _, state = decide(observation, policy, state, ClusterState(), now=tick * 5.0)
    return state


def observe(
    policy: ModelPolicy, signals: dict[Signal, float], current: int, ready: int
) -> Observation:
    return Observation(policy.model, signals, None, current, min(ready, current))


@settings(max_examples=300, deadline=None)
@given(
    policies,
    signal_maps(),
    signal_maps(allow_missing=False),
    st.integers(0, 6),
    st.integers(0, 6),
    states(),
    clusters(),
)
def test_more_load_never_yields_fewer_replicas(
    policy: ModelPolicy,
    low: dict[Signal, float],
    extra: dict[Signal, float],
    current: int,
    ready: int,
    state: ModelState,
    cluster: ClusterState,
) -> None:
    """Adding load to any present signal never lowers the desired count."""
    high = {s: v + extra[s] for s, v in low.items()}
    now = 60.0
    d_low, _ = decide(observe(policy, low, current, ready), policy, state, cluster, now)
    d_high, _ = decide(observe(policy, high, current, ready), policy, state, cluster, now)
    assert d_high.desired_replicas >= d_low.desired_replicas


@settings(max_examples=300, deadline=None)
@given(policies, signal_maps(), st.integers(0, 8), st.integers(0, 8), states(), clusters())
def test_decision_lies_within_bounds_and_placement(
    policy: ModelPolicy,
    signals: dict[Signal, float],
    current: int,
    ready: int,
    state: ModelState,
    cluster: ClusterState,
) -> None:
    """Always within [min, max]; a scale-up never goes past what fits on the nodes."""
    decision, _ = decide(observe(policy, signals, current, ready), policy, state, cluster, 60.0)
    assert policy.replicas.min <= decision.desired_replicas <= policy.replicas.max
    if decision.placement_cap is not None and decision.desired_replicas > current:
        assert decision.desired_replicas <= max(decision.placement_cap, policy.replicas.min)


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 8), st.integers(0, 8), states(), st.booleans(), clusters())
def test_no_scale_down_while_data_is_missing(
    policy: ModelPolicy,
    current: int,
    ready: int,
    state: ModelState,
    stale: bool,
    cluster: ClusterState,
) -> None:
    """Missing or stale data holds the count (only replicas.max may lower it)."""
    signals = dict.fromkeys(Signal, 0.0) if stale else {}
    observation = Observation(
        policy.model, signals, 0.0 if stale else None, current, min(ready, current)
    )
    decision, _ = decide(observation, policy, state, cluster, now=1000.0)
    assert decision.desired_replicas >= min(current, policy.replicas.max)
    assert decision.reasons[0] in (Reason.NO_DATA, Reason.STALE_DATA)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ALWAYS_ON_TARGETS),
    st.integers(1, 3),
    st.floats(0.9, 1.1),
    st.sampled_from(list(Signal)),
)
def test_no_flapping_under_steady_load_within_tolerance(
    policy: ModelPolicy, current: int, factor: float, signal: Signal
) -> None:
    """Load steady within the tolerance band around the current count never moves it
    (targets path: the band is the per-signal targets' notion)."""
    targets = dict(policy.targets.items())
    level = dict.fromkeys(Signal, 0.0)
    level[signal] = targets[signal] * current * factor
    driver = Driver(policy, lambda _t: level, current=current)
    decisions = driver.run(until=1800.0)
    assert all(d.desired_replicas == current for d in decisions)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([p for p in SIZED if not p.on_demand]), st.floats(0.0, 1.0))
def test_sized_count_settles_under_steady_load(policy: ModelPolicy, utilisation: float) -> None:
    """Steady arrivals with the in-flight count Little's law gives: once the estimates have
    settled (10 minutes), the sized count never moves again."""
    assert policy.sizing is not None
    capacity = policy.replicas.max * policy.sizing.slots_per_replica
    busy = utilisation * capacity * 0.8
    rate = busy / policy.sizing.service_seconds
    steady = {
        Signal.QUEUE_DEPTH: 0.0,
        Signal.INFLIGHT_REQUESTS: busy,
        Signal.REQUEST_RATE: rate,
        Signal.TOKENS_PER_SECOND: 0.0,
    }
    driver = Driver(policy, lambda _t: steady, current=1)
    driver.run(until=600.0)
    settled = driver.run(until=3600.0)
    assert len({d.desired_replicas for d in settled}) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=50, max_size=400))
def test_on_demand_never_goes_to_zero_before_idle_period(pattern: list[tuple[bool, bool]]) -> None:
    """Every scale-to-zero follows an unbroken, observed idle run at least as long as the
    keep-alive the decision states, which lies between the floor (two detection times) and
    idleSeconds."""
    policy = make_policy("mixtral-8x7b", scaleToZero={"idleSeconds": 120})
    assert policy.sizing is not None
    floor = 2.0 * policy.sizing.detection_seconds
    interval = 5.0

    def at(t: float) -> tuple[bool, bool]:
        return pattern[int(t // interval) % len(pattern)]

    driver = Driver(
        policy,
        lambda t: {s: (1.0 if at(t)[0] else 0.0) for s in Signal},
        current=1,
        cold_start=10.0,
        metrics_down=lambda t: at(t)[1],
    )
    decisions = driver.run(until=len(pattern) * interval)
    for decision in decisions:
        if Reason.SCALE_TO_ZERO in decision.reasons:
            keep = decision.keep_alive_s
            assert keep is not None
            assert floor <= keep <= 120.0
            ticks = math.ceil(keep / interval)
            window = [t for t in (decision.time - k * interval for k in range(ticks)) if t >= 0.0]
            assert decision.time >= keep
            assert not any(at(t)[0] or at(t)[1] for t in window)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(TARGETS_ONLY.values(), key=lambda p: p.model)),
    st.integers(1, 6),
    st.integers(0, 5),
    values,
    values,
    states(),
)
def test_starting_replicas_are_never_requested_twice(
    policy: ModelPolicy, current: int, ready: int, queue: float, inflight: float, state: ModelState
) -> None:
    """While replicas start, backlog alone never asks for more than already requested."""
    ready = min(ready, current - 1)  # at least one replica is starting
    targets = dict(policy.targets.items())
    # Arrivals that the requested replicas already cover: no rise, within the count.
    signals = {
        Signal.QUEUE_DEPTH: queue,
        Signal.INFLIGHT_REQUESTS: inflight,
        Signal.REQUEST_RATE: targets.get(Signal.REQUEST_RATE, 1.0) * current * 0.5,
        Signal.TOKENS_PER_SECOND: targets.get(Signal.TOKENS_PER_SECOND, 1.0) * current * 0.5,
    }
    state = replace(state, starting_since=55.0, demand_history=())
    decision, _ = decide(
        observe(policy, signals, current, ready), policy, state, ClusterState(), 60.0
    )
    assert decision.desired_replicas <= max(current, policy.replicas.min)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SIZED),
    st.integers(1, 6),
    st.integers(0, 5),
    values,
    values,
    st.floats(0.0, 2.0),
    states(),
)
def test_sized_backlog_is_never_projected_while_replicas_start(
    policy: ModelPolicy,
    current: int,
    ready: int,
    queue: float,
    inflight: float,
    rate: float,
    state: ModelState,
) -> None:
    """While replicas start, the sized count is what the arrivals ask for; the backlog adds
    at most the slots its requests occupy, and only where a new replica starts within one
    service time (it would find part of the backlog still waiting)."""
    assert policy.sizing is not None
    ready = min(ready, current - 1)  # at least one replica is starting
    signals = {
        Signal.QUEUE_DEPTH: queue,
        Signal.INFLIGHT_REQUESTS: queue + inflight,
        Signal.REQUEST_RATE: rate,
        Signal.TOKENS_PER_SECOND: 0.0,
    }
    state = replace(state, starting_since=55.0, demand_history=())
    decision, _ = decide(
        observe(policy, signals, current, ready), policy, state, ClusterState(), 60.0
    )
    assert decision.sizing is not None
    allowed = max(current, policy.replicas.min, decision.sizing.replicas)
    if policy.cold_start.seconds < decision.sizing.service_seconds:
        allowed = max(allowed, math.ceil((queue + inflight) / policy.sizing.slots_per_replica))
    assert decision.desired_replicas <= allowed
    # The arrivals-only count is the steady-state answer for this rate, whatever the backlog.
    again, _ = decide(
        observe(
            policy,
            {**signals, Signal.QUEUE_DEPTH: 0.0, Signal.INFLIGHT_REQUESTS: 0.0},
            current,
            ready,
        ),
        policy,
        state,
        ClusterState(),
        60.0,
    )
    assert again.sizing is not None
    assert again.sizing.replicas == decision.sizing.replicas
