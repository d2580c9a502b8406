"""decide(): one model's desired replica count from its observation, policy and state (pure).

The live control loop and the simulator both call this; no scaling rule lives anywhere else.
It reads no clock, does no I/O and draws no random numbers: `now` and the state come in,
the decision and the next state go out.

The steps, in order, each appending a Reason when it shapes the number:

1. data check: no usable signal, or the newest sample too old, holds the current count
   (after ``fallback.afterFailures`` such ticks the policy's fallback applies, which can
   only raise the count). Missing data never scales a model down;
2. demand per signal, ``ceil(value / per-replica target)``, with the HPA's tolerance band
   around the current count; the maximum across signals. Policies with a ``sizing``
   section replace it, whenever the request rate and the in-flight count are known, by the
   SLO sizing of ``scaler.core.sizing``: the fewest replicas whose slots hold the requests
   expected one reaction time ahead but for the SLO's miss ratio, on a service time
   calibrated online (the targets stay the fallback);
3. cold-start awareness: while replicas are starting, signals that grow with the backlog
   (queue, in-flight) cannot add replicas beyond those already requested; a sustained rise
   in arrivals (request rate, tokens/s) is projected ``coldStart.seconds`` ahead, so
   replicas start in time;
4. zero handling for on-demand models: activation at zero wakes the model at once; it goes
   to zero only after an unbroken idle period with no replica starting, as long as the
   keep-alive ``scaler.core.keepalive`` picks from the model's own idle gaps (at most
   ``scaleToZero.idleSeconds``);
5. stabilization (HPA-style windows: the lowest recommendation of the up window, the highest
   of the down window) and step limits (at most ``maxStep`` replicas per ``periodSeconds``);
6. placement cap: never more replicas than fit on the nodes (ready ones are never cut);
7. bounds ``[replicas.min, replicas.max]``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from operator import attrgetter
from typing import TypeVar

from scaler.core.keepalive import MIN_GAPS, keep_alive_seconds, remember_gap
from scaler.core.placement import Occupancy
from scaler.core.policy import FallbackMode, ModelPolicy
from scaler.core.signals import Signal
from scaler.core.sizing import Sizing, arrival_rate, size_for_slo
from scaler.core.types import (
    ClusterState,
    Decision,
    ModelState,
    Observation,
    Reason,
    build_decision,
    build_state,
)

# Float noise guard: 4.0000000001 / 2 must still be 2 replicas, not 3.
_EPS = 1e-9

# The shortest keep-alive of a policy without sizing (no detection time of its own): a
# request must have had a scrape (15 s is common) and a tick (5 s) to be seen before an
# idle model goes to zero. A sized policy's floor is twice its detection (see _Plan).
_KEEP_ALIVE_FLOOR_SECONDS = 30.0

# The enum members every model's decision reads, as module names: in Python 3.11 reading
# a member off its class goes through EnumType.__getattr__, ten times a name's cost.
_REQUEST_RATE, _INFLIGHT_REQUESTS = Signal.REQUEST_RATE, Signal.INFLIGHT_REQUESTS
_QUEUE_DEPTH = Signal.QUEUE_DEPTH
_DEMAND, _SLO_SIZED = Reason.DEMAND, Reason.SLO_SIZED

# A trend rises by at least one replica's worth across the trend window (less float noise).
_TREND_RISE = 1.0 - 1e-6

# The request counter proves a fall in arrivals only while its long-run rate carries at
# least this share of the throughput the busy slots prove (Little's law): below it the
# counter misses requests (llama.cpp's rate is the activator's; requests that bypass it are
# not counted) and its quiet minute is no evidence. Where the counter is right the two
# agree within the service estimate's error, far above a half.
_COUNTER_AGREEMENT = 0.5

# The shortest scale-down hold: a dip must outlast a scrape (15 s at most of the data paths
# scaler meets) to be more than the noise of a single reading. Not tied to the detection
# time like the keep-alive's floor: at the 5 s path's 10 s it measured dearer for its SLO
# (docs/decisions.md, "Measured and not adopted").
_RELEASE_FLOOR_SECONDS = 15.0


class _Plan:
    """The numbers decide() reads off one policy, computed once per policy object.

    A policy is immutable, and each read of a nested pydantic field (``policy.cold_start.
    seconds``) costs more than the arithmetic it feeds: a 1,000-model tick made some 60 such
    reads per model. Derived values are computed here by the same expressions decide() used
    inline, so every float comes out the same.
    """

    __slots__ = (
        "activation_signals",
        "activation_threshold",
        "band",
        "change_period",
        "cold_start",
        "dispersion_horizon",
        "down_period",
        "down_step",
        "down_window",
        "fallback",
        "horizon",
        "idle_prior",
        "keep_alive_floor",
        "keep_alive_prior",
        "max_replicas",
        "min_replicas",
        "miss",
        "model",
        "need",
        "on_demand",
        "order",
        "overdue_after",
        "per_node",
        "prior_requests",
        "rate_horizon",
        "reaction",
        "release_floor",
        "release_hold",
        "restart_cost",
        "service_cv",
        "service_prior",
        "shown_miss",
        "sized",
        "slots",
        "stale_after",
        "targets",
        "tolerance",
        "trend_window",
        "up_period",
        "up_step",
        "up_window",
        "wait",
        "window",
    )

    def __init__(self, policy: ModelPolicy) -> None:
        self.model = policy.model
        self.on_demand = policy.on_demand
        self.order = (self.on_demand, self.model)
        # (signal, per-replica target, whether it grows with the backlog), Signal order.
        self.targets = tuple((s, t, s.grows_with_backlog) for s, t in policy.targets.items())
        self.tolerance = policy.tolerance
        # The tolerance band's half-width as _within() compares it (same float).
        self.band = self.tolerance + _EPS
        self.stale_after = policy.data.stale_after_seconds
        self.overdue_after = policy.cold_start.overdue_after_seconds
        self.cold_start = policy.cold_start.seconds
        self.trend_window = policy.cold_start.trend_window_seconds
        self.min_replicas = policy.replicas.min
        self.max_replicas = policy.replicas.max
        self.need = policy.placement.memory_gib
        self.per_node = policy.placement.max_per_node
        self.up_window = policy.scale_up.stabilization_seconds
        self.up_period = policy.scale_up.period_seconds
        self.up_step = policy.scale_up.max_step
        self.down_window = policy.scale_down.stabilization_seconds
        self.down_period = policy.scale_down.period_seconds
        self.down_step = policy.scale_down.max_step
        self.change_period = max(self.up_period, self.down_period)
        self.fallback = policy.fallback
        rule = policy.scale_to_zero
        # None: any positive signal is activity (models without a scaleToZero section).
        self.activation_signals = None if rule is None else rule.activation_signals
        self.activation_threshold = 0.0 if rule is None else rule.activation_threshold
        self.restart_cost = policy.restart_cost_seconds
        self.idle_prior = rule.idle_seconds if rule is not None else math.inf
        sizing = policy.sizing
        # The shortest keep-alive: a request that came just before the model fell idle has
        # had two detection times (each a scrape and a tick) to be seen before it goes to
        # zero. 20 s on the 5 s path (was a fixed 30 s, which assumed a 15 s scrape).
        self.keep_alive_floor = (
            _KEEP_ALIVE_FLOOR_SECONDS if sizing is None else 2.0 * sizing.detection_seconds
        )
        # What keep_alive_seconds() answers until MIN_GAPS idle gaps are known: a constant of
        # the policy, so asked once here rather than on every tick.
        self.keep_alive_prior = keep_alive_seconds(
            (),
            restart_cost_s=self.restart_cost,
            prior_s=self.idle_prior,
            floor_s=self.keep_alive_floor,
        )
        self.sized = sizing is not None
        # The SLO sizing's numbers; placeholders (never read) for policies without it.
        self.slots = 1 if sizing is None else sizing.slots_per_replica
        self.service_prior = 1.0 if sizing is None else sizing.service_seconds
        self.prior_requests = 0.0 if sizing is None else sizing.prior_requests
        self.horizon = 1.0 if sizing is None else sizing.calibration_seconds
        self.rate_horizon = 1.0 if sizing is None else sizing.rate_horizon_seconds
        self.dispersion_horizon = 1.0 if sizing is None else sizing.dispersion_seconds
        self.window = 1.0 if sizing is None else sizing.rate_window_seconds
        self.service_cv = 1.0 if sizing is None else sizing.service_cv
        # The reaction time: detection, then the cold start (also a release's restart cost).
        self.reaction = 0.0 if sizing is None else sizing.detection_seconds + self.cold_start
        self.wait = policy.slo.queue_wait_seconds
        self.miss = policy.sizing_miss_ratio
        # The miss ratio the wait is shown at, when the sizing aims elsewhere.
        aims_elsewhere = sizing is not None and sizing.aim_percentile is not None
        self.shown_miss = policy.slo_miss_ratio if aims_elsewhere else None
        # The scale-down hold until enough release gaps are known (see _release_hold).
        window = self.down_window
        self.release_hold = (
            window if sizing is None else min(window, max(self.reaction, _RELEASE_FLOOR_SECONDS))
        )
        self.release_floor = min(window, _RELEASE_FLOOR_SECONDS)


# Keyed by id(policy): a policy (pydantic, with a dict field) is not hashable. The weak
# reference tells the policy from a later one at a reused address, and its callback drops
# the entry with the policy, so the cache holds only the plans of live policies.
_PLANS: dict[int, tuple[weakref.ref[ModelPolicy], _Plan]] = {}


# decide_all()'s order: always-on models first, then on-demand ones, each by name.
_ORDER = attrgetter("order")


def _plan(policy: ModelPolicy) -> _Plan:
    """The policy's plan, computed on first use (a pure cache: same policy, same plan)."""
    key = id(policy)
    entry = _PLANS.get(key)
    if entry is not None and entry[0]() is policy:
        return entry[1]
    plan = _Plan(policy)
    _PLANS[key] = (weakref.ref(policy, partial(_forget, key)), plan)
    return plan


def _forget(key: int, ref: weakref.ref[ModelPolicy]) -> None:
    global _dropped
    _dropped += 1
    entry = _PLANS.get(key)
    if entry is not None and entry[0] is ref:
        del _PLANS[key]


# The last decide_all() call's fleet (its policies' ids, `_dropped` then) and its plans in
# decide_all()'s order. A tick decides the same fleet as the one before, and sorting 1,000
# plans by (class, name) plus a _plan() call per policy cost more than comparing the ids.
# A plan dropped since voids it: a gone policy's id may be a new policy's.
_fleet: tuple[tuple[int, ...], int, tuple[_Plan, ...]] = ((), 0, ())
_dropped = 0  # plans dropped by _forget() so far


def _ordered_plans(policies: Iterable[ModelPolicy]) -> tuple[_Plan, ...]:
    """The policies' plans in decide_all()'s order (a pure cache: same fleet, same list)."""
    global _fleet
    fleet = tuple(policies)
    ids = tuple(map(id, fleet))
    known, dropped, plans = _fleet
    if ids == known and dropped == _dropped:
        return plans
    plans = tuple(sorted(map(_plan, fleet), key=_ORDER))
    _fleet = (ids, _dropped, plans)
    return plans


def decide(
    observation: Observation,
    policy: ModelPolicy,
    state: ModelState,
    cluster: ClusterState,
    now: float,
) -> tuple[Decision, ModelState]:
    """The desired replicas for one model now, and the state to pass to the next call (pure)."""
    occupancy = Occupancy(cluster) if cluster.nodes else None
    return _decide(observation, _plan(policy), state, occupancy, now)


def _decide(
    observation: Observation,
    plan: _Plan,
    state: ModelState,
    occupancy: Occupancy | None,
    now: float,
) -> tuple[Decision, ModelState]:
    """decide() on a placement index that decide_all() shares across one tick's models."""
    current = observation.current_replicas
    starting = observation.starting_replicas
    starting_since = (
        (state.starting_since if state.starting_since is not None else now) if starting else None
    )
    # The usable readings: finite and not negative (NaN fails both comparisons).
    signals: dict[Signal, float] = {}
    for signal, reading in observation.signals.items():
        if 0.0 <= reading < math.inf:
            signals[signal] = reading
    stale = observation.sample_time is not None and now - observation.sample_time > plan.stale_after
    if stale:
        return _hold(observation, plan, state, occupancy, now, stale, signals, starting_since)

    # 2. Demand per signal, with the tolerance band around the current count.
    overdue = starting_since is not None and now - starting_since > plan.overdue_after
    hold_backlog = starting > 0 and not overdue
    demands: dict[Signal, int] = {}
    demand: int | None = None  # the largest of `demands`; None: no targeted signal read
    arrivals = 0.0  # demand in fractional replicas from arrival-driven signals, for the trend
    held = tolerated = False
    band = plan.band
    for signal, target, grows_with_backlog in plan.targets:
        value = signals.get(signal)
        if value is None:
            continue
        ratio = value / target
        raw = math.ceil(ratio - _EPS)
        # _within(ratio, current, plan.tolerance), written out: it runs once per signal.
        if raw != current and current > 0 and abs(ratio / current - 1.0) <= band:
            raw, tolerated = current, True
        if grows_with_backlog:
            if hold_backlog and raw > current:
                # 3a. This backlog is what the starting replicas are coming to serve.
                raw, held = current, True
        elif ratio > arrivals:
            arrivals = ratio
        demands[signal] = raw
        if demand is None or raw > demand:
            demand = raw
    if demand is None:
        return _hold(observation, plan, state, occupancy, now, stale, signals, starting_since)
    reasons: list[Reason] = [_DEMAND]
    partial = len(demands) < len(plan.targets)
    if partial:
        reasons.append(Reason.PARTIAL_DATA)
    if overdue:
        reasons.append(Reason.COLD_START_OVERDUE)

    # 2b. SLO sizing (policies with a sizing section): the queueing model replaces the
    # per-signal targets whenever it has what it needs; the targets stay the fallback.
    service = state.service
    sizing: Sizing | None = None
    rate = signals.get(_REQUEST_RATE)
    inflight = signals.get(_INFLIGHT_REQUESTS)
    if plan.sized and rate is not None and inflight is not None:
        # The profile (service time, burstiness) comes from the state as it was before this
        # tick: a reading cannot lower its own estimate, so more load never sizes smaller.
        # The dispersion is how much wider than Poisson the count of arrivals runs:
        # Allen–Cunneen's (ca² + cs²) / 2 from the measured index of dispersion (the raw
        # index buys more headroom than it saves misses on the bench suite). `proven`: see
        # below.
        seconds, dispersion, proven = service.profile(
            prior_s=plan.service_prior,
            prior_requests=plan.prior_requests,
            horizon=plan.horizon,
            dispersion_horizon=plan.dispersion_horizon,
            window_s=plan.window,
            service_cv=plan.service_cv,
        )
        queued = signals.get(_QUEUE_DEPTH, 0.0)
        busy = inflight - queued if inflight - queued > 0.0 else 0.0
        service = service.observe(
            rate=rate,
            busy=busy,
            now=now,
            horizon=plan.horizon,
            rate_horizon=plan.rate_horizon,
            dispersion_horizon=plan.dispersion_horizon,
            window_s=plan.window,
        )
        # Little's law the other way round: the long-run busy slots prove a throughput of
        # busy / S. It keeps the sizing honest where the request counter under-counts or
        # reads 0 (llama.cpp has none: its rate is the activator's, and requests that
        # bypass the activator are not in it); where the counter is right it is the same.
        # Only a counter that agrees with it over the long run can prove a fall: a quiet
        # minute of one that misses requests says nothing about the model.
        level = service.mean_rate()
        trusted = level is not None and level >= _COUNTER_AGREEMENT * proven
        if level is not None and proven > level:
            level = proven
        rate = arrival_rate(rate, plan.window, level, falls=trusted)
        # While replicas start, the requests in the system are what they come to serve:
        # their queue is not projected forward again (that cascades: 2 -> 4 -> 8), only the
        # arrivals are. Every request present still needs a slot: the floor asks for the
        # slots the requests in the system occupy, never for one of them twice.
        sizing = _size(plan, rate, 0.0 if hold_backlog else inflight, seconds, dispersion)
        floor = math.ceil(inflight / plan.slots - _EPS)
        # Held too, unless a replica asked for now is serving before one service time has
        # passed: then it takes part of the backlog (Mixtral: 60 s start, 90 s requests);
        # otherwise the replicas already starting drain it first (mistral: 90 s, 50 s).
        if hold_backlog and floor > current and plan.cold_start >= seconds:
            floor, held = current, True
        demand = sizing.replicas if sizing.replicas >= floor else floor
        if hold_backlog and demand < current:
            # The hold keeps the backlog from asking for more replicas, not from keeping
            # those asked for it: sized on arrivals alone, the count fell back while the
            # replica started for the backlog was still loading, its scale-down window ran
            # out before it was ready, and the next tick (nothing starting, the backlog
            # counted again) asked for it anew (Mixtral, sparse sessions: 2 -> 1 -> 2 in
            # 70 s, a 30 GiB start for nothing).
            kept = _size(plan, rate, inflight, seconds, dispersion).replicas
            kept = kept if kept < current else current
            if kept > demand:
                demand, held = kept, True
        arrivals = sizing.load / plan.slots
        tolerated = False
        reasons[0] = _SLO_SIZED
    if held:
        reasons.append(Reason.COLD_START_HOLD)
    if tolerated and demand == current:
        reasons.append(Reason.WITHIN_TOLERANCE)

    # 3b. Project demand cold-start seconds ahead from a sustained rise in arrivals. Only
    # arrival-driven signals are extrapolated: a growing queue is as much a symptom of
    # missing capacity as of rising demand. Not at zero: a wake-up is a step, not a trend.
    recent = _since(state.demand_history, now - plan.trend_window - _EPS)
    if not recent or recent[-1][0] < now:
        # The history is time-ordered (each tick appends after the points before it): all
        # of it is older than now.
        history = (*recent, (now, arrivals))
    else:
        history = (*_before(recent, now), (now, arrivals))
    slope = _trend(history, plan.trend_window) if current > 0 else 0.0
    if slope > 0.0:
        projected_level = arrivals + slope * plan.cold_start
        if sizing is not None:
            # The projected load, in requests/s, through the same queueing model.
            projected_rate = projected_level * plan.slots / sizing.service_seconds
            projected = _size(
                plan, projected_rate, 0.0, sizing.service_seconds, sizing.dispersion
            ).replicas
        else:
            projected = math.ceil(projected_level - _EPS)
            if _within(projected_level, current, plan.tolerance):
                projected = current
        if projected > demand:
            demand = projected
            reasons.append(Reason.TREND_PROJECTED)

    # 4. Zero handling.
    active, idle_known = _activity(signals, plan)
    last_active = now if active else state.last_active
    idle_since = (
        None
        if active or not idle_known
        else (state.idle_since if state.idle_since is not None else now)
    )
    idle_gaps = state.idle_gaps
    keep_alive: float | None = None
    on_demand = plan.on_demand
    if on_demand:
        if active and state.idle_since is not None:
            # An idle run just ended with a request: one more sample of the gap distribution.
            idle_gaps = remember_gap(idle_gaps, now - state.idle_since)
        keep_alive = (
            plan.keep_alive_prior
            if len(idle_gaps) < MIN_GAPS
            else keep_alive_seconds(
                idle_gaps,
                restart_cost_s=plan.restart_cost,
                prior_s=plan.idle_prior,
                floor_s=plan.keep_alive_floor,
            )
        )
    recommendations = state.recommendations
    changes = _observed_changes(state, current, plan, now)
    if on_demand and current == 0:
        desired = (demand if demand > 1 else 1) if active else 0
        reasons.append(Reason.SCALE_FROM_ZERO if active else Reason.IDLE_AT_ZERO)
        if active:
            desired = _limit_step(desired, current, plan, changes, now, reasons)
    elif (
        on_demand
        and idle_since is not None
        and starting == 0
        and keep_alive is not None
        and now - idle_since >= keep_alive
    ):
        # The idle period is this transition's stabilization: jump straight to zero.
        desired = 0
        reasons.append(Reason.SCALE_TO_ZERO)
    else:
        if on_demand and demand < 1:
            demand = 1
            reasons.append(Reason.IDLE_PENDING)
        down_window = _release_hold(plan, state)
        desired, recommendations = _stabilize(
            demand, current, plan, state, now, reasons, down_window
        )
        if partial and desired < current:
            desired = current  # a missing signal may hide load: never scale down on it
        desired = _limit_step(desired, current, plan, changes, now, reasons)

    # 6. Placement cap; 7. bounds.
    cap = (
        occupancy.capacity_for(plan.model, plan.need, plan.per_node)
        if occupancy is not None
        else None
    )
    if cap is not None and desired > cap:
        floor = min(desired, observation.ready_replicas)
        if max(cap, floor) < desired:
            desired = max(cap, floor)
            reasons.append(Reason.PLACEMENT_CAP)
    desired = _bound(desired, plan, reasons)
    release_gaps, released_at = _track_releases(state, current, desired, now)

    decision = build_decision(
        plan.model,
        now,
        desired,
        current,
        observation.ready_replicas,
        starting,
        signals,
        demands,
        demand,
        cap,
        tuple(reasons),
        sizing,
        keep_alive,
    )
    next_state = build_state(
        recommendations,
        history,
        last_active,
        idle_since,
        0,  # consecutive failures
        starting_since,
        desired,
        changes,
        current,
        service,
        idle_gaps,
        release_gaps,
        released_at,
    )
    return decision, next_state


def _size(
    plan: _Plan, rate: float, in_system: float, service_seconds: float, dispersion: float
) -> Sizing:
    """The queueing model's replica count for `rate` requests/s (policies with sizing)."""
    sizing = size_for_slo(
        arrival_rate=rate,
        in_system=in_system,
        reaction_s=plan.reaction,
        service_seconds=service_seconds,
        slots=plan.slots,
        wait_s=plan.wait,
        miss=plan.miss,
        dispersion=dispersion,
        service_cv=plan.service_cv,
        limit=plan.max_replicas,
    )
    if plan.shown_miss is None:
        return sizing
    # The predicted wait is shown at the SLO's own percentile, whatever the aim.
    return sizing._replace(miss=plan.shown_miss)


def decide_all(
    observations: Mapping[str, Observation],
    policies: Iterable[ModelPolicy],
    states: Mapping[str, ModelState],
    cluster: ClusterState,
    now: float,
) -> tuple[dict[str, Decision], dict[str, ModelState]]:
    """Decide every model in one tick, reserving node memory as it goes (pure).

    Always-on models are decided first, then on-demand ones, each by name. The replicas one
    model is about to add are placed (virtually, spread like the scheduler would) before the
    next model's placement cap is computed, so two models never count on the same free
    memory. A policy without an observation is decided on an empty one (no data: hold).
    """
    decisions: dict[str, Decision] = {}
    next_states: dict[str, ModelState] = {}
    for decision, state in decide_each(observations, policies, states, cluster, now):
        decisions[decision.model] = decision
        next_states[decision.model] = state
    return decisions, next_states


def decide_each(
    observations: Mapping[str, Observation],
    policies: Iterable[ModelPolicy],
    states: Mapping[str, ModelState],
    cluster: ClusterState,
    now: float,
) -> Iterator[tuple[Decision, ModelState]]:
    """decide_all() one model at a time: each model's decision and next state, in its order.

    The same decisions as decide_all() (which consumes it); a driver that must not hold its
    thread for the whole tick (the live loop, on its event loop) takes a few models between
    two other jobs. The arguments must not change until the last model is decided.
    """
    occupancy = Occupancy(cluster) if cluster.nodes else None
    fresh = ModelState()  # immutable: one serves every model without a state yet
    for plan in _ordered_plans(policies):
        model = plan.model
        observation = observations.get(model) or Observation(
            model=model, signals={}, sample_time=None, current_replicas=0, ready_replicas=0
        )
        decision, state = _decide(observation, plan, states.get(model, fresh), occupancy, now)
        if occupancy is not None:
            occupancy.reserve_for(model, plan.need, plan.per_node, decision.desired_replicas)
        yield decision, state


def _hold(
    observation: Observation,
    plan: _Plan,
    state: ModelState,
    occupancy: Occupancy | None,
    now: float,
    stale: bool,
    signals: Mapping[Signal, float],
    starting_since: float | None,
) -> tuple[Decision, ModelState]:
    """Step 1: no usable data. Hold the current count; after N failures apply the fallback."""
    current = observation.current_replicas
    failures = state.consecutive_failures + 1
    reasons = [Reason.STALE_DATA if stale else Reason.NO_DATA]
    desired = current
    cap = (
        occupancy.capacity_for(plan.model, plan.need, plan.per_node)
        if occupancy is not None
        else None
    )
    fallback = plan.fallback
    if (
        failures >= fallback.after_failures
        and fallback.mode is FallbackMode.AT_LEAST
        and fallback.replicas > current
    ):
        desired = fallback.replicas if cap is None else max(current, min(fallback.replicas, cap))
        if desired > current:
            reasons.append(Reason.FALLBACK)
    desired = _bound(desired, plan, reasons)
    decision = Decision(
        model=plan.model,
        time=now,
        desired_replicas=desired,
        current_replicas=current,
        ready_replicas=observation.ready_replicas,
        starting_replicas=observation.starting_replicas,
        signals=signals,
        demands={},
        demand=None,
        placement_cap=cap,
        reasons=tuple(reasons),
    )
    # A gap breaks the idle run: after it, the idle period is counted afresh.
    next_state = replace(
        state,
        consecutive_failures=failures,
        idle_since=None,
        starting_since=starting_since,
        last_desired=desired,
        scale_changes=_observed_changes(state, current, plan, now),
        observed_replicas=current,
    )
    return decision, next_state


def _activity(signals: Mapping[Signal, float], plan: _Plan) -> tuple[bool, bool]:
    """(active, idle_known): whether an activation signal is over the threshold, and
    whether every activation signal was read (idleness is only known when all were)."""
    if plan.activation_signals is None:
        for value in signals.values():
            if value > 0:
                return True, True
        return False, True
    active = False
    seen = 0
    for signal in plan.activation_signals:
        reading = signals.get(signal)
        if reading is not None:
            seen += 1
            if reading > plan.activation_threshold:
                active = True
    return active, seen == len(plan.activation_signals)


def _within(level: float, current: int, tolerance: float) -> bool:
    """Whether `level` replicas' worth is within the tolerance band around `current`."""
    return current > 0 and abs(level / current - 1.0) <= tolerance + _EPS


_Point = TypeVar("_Point", bound=tuple[float, float])


def _before(points: tuple[_Point, ...], now: float) -> tuple[_Point, ...]:
    """The `points` strictly before `now`."""
    return tuple(p for p in points if p[0] < now)


def _since(points: tuple[_Point, ...], cutoff: float) -> tuple[_Point, ...]:
    """The time-ordered `points` strictly after `cutoff` (a slice: no copy when none expire)."""
    if not points or points[0][0] > cutoff:
        return points
    for index in range(1, len(points)):
        if points[index][0] > cutoff:
            return points[index:]
    return ()


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points, per second; 0 with fewer than 2 points."""
    n = len(points)
    if n < 2:
        return 0.0
    # One pass of plain sums (this runs twice per model per tick), on times relative to the
    # first point: Unix times squared would cancel catastrophically.
    origin = points[0][0]
    sum_t = sum_v = sum_tt = sum_tv = 0.0
    for absolute, v in points:
        t = absolute - origin
        sum_t += t
        sum_v += v
        sum_tt += t * t
        sum_tv += t * v
    var_t = sum_tt - sum_t * sum_t / n
    if var_t <= 1e-12 * (sum_tt if sum_tt > 1.0 else 1.0):
        return 0.0
    return (sum_tv - sum_t * sum_v / n) / var_t


def _trend(points: Sequence[tuple[float, float]], window: float) -> float:
    """The rise per second that both halves of the window agree on, if it is a trend; else 0.

    A step (flat, jump, flat) has a positive slope over the whole window but none within
    either half, so it is not extrapolated; a ramp rises in both halves. At low request
    rates a 1m rate() is noisy (Poisson): only a rise of at least one replica's worth across
    the `window` counts as a trend, not a wobble.
    """
    if len(points) < 4:
        return 0.0
    half = len(points) // 2
    first = _slope(points[:half])
    if not first * window >= _TREND_RISE:
        return 0.0  # whatever the second half does: the lower of the two decides
    second = _slope(points[half:])
    slope = second if second < first else first
    return slope if slope * window >= _TREND_RISE else 0.0


def _observed_changes(
    state: ModelState, current: int, plan: _Plan, now: float
) -> tuple[tuple[float, int], ...]:
    """Replica changes seen within the longest step-limit period, this tick's included.

    A change counts against the step limit when it shows in the observed count, not when
    it is decided: the HPA applies a decision up to a sync period (15 s) later, and a
    decision counted before it lands would cancel itself on the next tick.
    """
    changes = state.scale_changes
    if changes:
        changes = _within_period(changes, now, plan.change_period)
    if state.observed_replicas is not None and current != state.observed_replicas:
        changes = (*changes, (now, current - state.observed_replicas))
    return changes


def _within_period(
    changes: tuple[tuple[float, int], ...], now: float, period: float
) -> tuple[tuple[float, int], ...]:
    """The `changes` less than `period` seconds before `now`."""
    return tuple((t, delta) for t, delta in changes if now - t < period)


def _release_hold(plan: _Plan, state: ModelState) -> float:
    """The scale-down window: how long a replica the demand no longer needs is kept.

    Releasing it and needing it again costs a restart: one reaction time (a replica released
    and needed again is back one reaction time later, detection then the cold start: the
    cold start is paid in memory, the detection in requests the model runs short for). That
    is the keep-alive's ski-rental again, over the gaps between a scale-down and the next
    scale-up: where released replicas are rarely needed soon the hold shrinks towards the
    15 s floor, where they come back quickly it grows, never past the policy's
    ``scaleDown.stabilizationSeconds`` (the cap); until `MIN_GAPS` gaps are known it is one
    reaction time. Policies without sizing keep their window: their targets carry no
    lookahead.
    """
    if not plan.sized or len(state.release_gaps) < MIN_GAPS:
        return plan.release_hold
    return keep_alive_seconds(
        state.release_gaps,
        restart_cost_s=plan.reaction,
        prior_s=plan.down_window,
        floor_s=plan.release_floor,
    )


def _track_releases(
    state: ModelState, current: int, desired: int, now: float
) -> tuple[tuple[float, ...], float | None]:
    """The release gaps and pending release after this tick's decision (see _release_hold).

    A scale-down between running counts opens a gap; the next scale-up closes it. Moves to
    and from zero are the keep-alive's (idle gaps), not a release.
    """
    gaps, released_at = state.release_gaps, state.released_at
    if 0 < desired < current:
        return gaps, now
    if desired > current > 0 and released_at is not None:
        return remember_gap(gaps, now - released_at), None
    return gaps, released_at


def _stabilize(
    demand: int,
    current: int,
    plan: _Plan,
    state: ModelState,
    now: float,
    reasons: list[Reason],
    down_window: float,
) -> tuple[int, tuple[tuple[float, int], ...]]:
    """Step 5a: HPA-style stabilization. Returns the count and the new recommendation history.

    The up window takes the lowest recommendation in it (a burst must last the window to
    count), the down window (`down_window`, see _release_hold) the highest (a dip must last
    the window to count).
    """
    up_window = plan.up_window
    history = _since(
        state.recommendations, now - (up_window if up_window >= down_window else down_window)
    )
    if state.observed_replicas is None:
        # A fresh state (first tick, or a restart that lost its state): like the HPA's
        # first sync, the running count stands as a recommendation, so the down window
        # holds it instead of dropping straight to this tick's demand.
        history = ((now, current),)
    # One pass over the (time-ordered) history for both windows.
    up_cutoff, down_cutoff = now - up_window, now - down_window
    up_limit = down_limit = demand
    for t, recommended in history:
        if t > up_cutoff and recommended < up_limit:
            up_limit = recommended
        if t > down_cutoff and recommended > down_limit:
            down_limit = recommended
    desired = up_limit if up_limit > current else current
    if down_limit < desired:
        desired = down_limit
    if desired < demand:
        reasons.append(Reason.STABILIZED_UP)
    elif desired > demand:
        reasons.append(Reason.STABILIZED_DOWN)
    return desired, _dominant((*history, (now, demand)))


def _dominant(history: tuple[tuple[float, int], ...]) -> tuple[tuple[float, int], ...]:
    """The entries of a time-ordered recommendation history that a window can still need.

    Both windows end now, and so does every later one: an entry that a later entry matches
    or exceeds can never be a window's highest (the later one is inside every window the
    earlier one is), and one that a later entry matches or undercuts never its lowest. An
    entry neither strictly above nor strictly below everything after it is dropped: every
    window's lowest and highest stay as they were, and the history stays as short as the
    number of distinct levels in it (one entry under steady load), however the load moves.
    """
    last = len(history) - 1
    highest = lowest = history[last][1]
    keep = [history[last]]
    for index in range(last - 1, -1, -1):
        entry = history[index]
        value = entry[1]
        if value > highest:
            highest = value
            keep.append(entry)
        elif value < lowest:
            lowest = value
            keep.append(entry)
    if len(keep) == len(history):
        return history
    keep.reverse()
    return tuple(keep)


def _limit_step(
    desired: int,
    current: int,
    plan: _Plan,
    changes: Sequence[tuple[float, int]],
    now: float,
    reasons: list[Reason],
) -> int:
    """Step 5b: at most maxStep replicas added (removed) within any periodSeconds."""
    if desired > current:
        period = plan.up_period
        done = 0
        for t, delta in changes:
            if delta > 0 and now - t < period:
                done += delta
        limit = current + max(0, plan.up_step - done)
        if desired > limit:
            reasons.append(Reason.STEP_LIMITED)
            return limit
    elif desired < current:
        period = plan.down_period
        done = 0
        for t, delta in changes:
            if delta < 0 and now - t < period:
                done -= delta
        limit = current - max(0, plan.down_step - done)
        if desired < limit:
            reasons.append(Reason.STEP_LIMITED)
            return limit
    return desired


def _bound(desired: int, plan: _Plan, reasons: list[Reason]) -> int:
    """Step 7: clamp to [replicas.min, replicas.max]."""
    if desired < plan.min_replicas:
        reasons.append(Reason.BOUNDED_MIN)
        return plan.min_replicas
    if desired > plan.max_replicas:
        reasons.append(Reason.BOUNDED_MAX)
        return plan.max_replicas
    return desired
