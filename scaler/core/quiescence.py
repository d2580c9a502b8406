"""When an idle model's decision can next change, and its state meanwhile (pure).

A driver that ticks decide() every few seconds (the simulator: one tick per 5 s of virtual
time) spends nearly all of a quiet week deciding the same thing again. This module says when
it may stop asking: given the decision just made on an observation at rest (every signal
read and zero, every replica ready) and the state decide() returned with it, `quiet_until`
gives the time before which decide(), fed the same observation again, provably decides the
same replica count; `advance` gives the state decide() would have carried through the ticks
the driver skips; `replay_seconds` says how long before the end of a skip the driver must
tick normally again.

What changes from one idle tick to the next, and how each part is handled:

- the service estimate (``ModelState.service``, policies with a ``sizing`` section): its
  averages fold in a reading of zero every tick, so they decay for days; `advance` folds
  the same readings with ``ServiceEstimate.observe``, as decide() does;
- the windows (stabilization recommendations, the trend's demand history, the replica
  changes counted by the step limits) hold the last minutes of ticks only: the driver ticks
  normally for `replay_seconds` before a skip ends, and those ticks rebuild them, so that
  nothing the skipped ticks would have written is left in them afterwards;
- everything else (idle start, last activity, idle gaps, replica counts) stays as it is
  while nothing happens.

The proof that the replica count holds, in the terms of decide()'s steps: every signal is 0,
so the per-signal demands are 0; with sizing, the arrival rate and busy slots the estimate
holds only decay, so a bound on the load taken now bounds every later tick's, and a load
small enough makes one replica enough (Markov: the count exceeds one replica's k slots with
probability at most mean / (k + 1), kept under the miss ratio the sizing aims at); the
trend cannot project a rise out of values that small; a demand equal to the current count
(or below it, at the policy's minimum) is what stabilization (whatever its learned
scale-down window: never longer than the policy's), step limits, the placement cap and the
bounds then keep. On-demand models: asleep, they stay asleep while nothing is active; awake,
they hold until their keep-alive runs out.

Two tests hold this module to decide(): ``tests/core/test_quiescence.py`` checks, over
hypothesis-drawn busy stretches and every shipped policy, that a promise holds and that a
skip ends in decide()'s own decisions and state; the simulator's identity test
(``tests/simulation/test_fast_forward.py``) runs the bundled scenarios and idle-heavy traces
with and without skipping and requires the same results. A change to decide() that this
module does not follow fails one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from scaler.core.policy import ModelPolicy
from scaler.core.signals import Signal
from scaler.core.sizing import ServiceEstimate
from scaler.core.types import Decision, ModelState, Reason

_SAFETY = 0.5
"""Headroom on every bound below, against the rounding of the averages' decay."""


def quiet_until(
    policy: ModelPolicy,
    decision: Decision,
    state: ModelState,
    *,
    sample_age: float,
    tick_seconds: float,
) -> float:
    """The time before which decide() keeps deciding `decision.desired_replicas` (pure).

    `decision` and `state` are what decide() just returned; the promise holds for ticks at
    least `tick_seconds` apart that see the same observation again (same signals, same
    replica counts), its newest sample at most `sample_age` old, and are fed the state each
    returns (or `advance`'s). ``decision.time`` means no promise: tick as usual.
    """
    now = decision.time
    if not _at_rest(policy, decision, state, sample_age):
        return now
    current = decision.current_replicas
    demand = decision.demand
    if policy.on_demand and current == 0:
        return math.inf  # asleep: nothing active wakes it
    if demand is None or demand > current or (demand < current != policy.replicas.min):
        return now  # a count still moving, or one held by a window that will expire
    if any(r != demand for _, r in state.recommendations) or state.scale_changes:
        return now  # recent changes: let their windows pass
    arrivals = _arrival_bound(policy, decision, state)
    if arrivals is None:
        return now
    # The trend's slope over points at least half a tick apart is at most their spread over
    # that spacing; it must stay far from one replica's worth across the trend window.
    spread = max([arrivals, *(d for _, d in state.demand_history)])
    if spread * policy.cold_start.trend_window_seconds / (0.5 * tick_seconds) >= _SAFETY:
        return now
    if policy.on_demand and state.idle_since is not None and decision.keep_alive_s is not None:
        # Awake and idle: asleep once the keep-alive has run out; a tick's margin for floats.
        return state.idle_since + decision.keep_alive_s - tick_seconds
    return math.inf


def advance(
    policy: ModelPolicy, decision: Decision, state: ModelState, ticks: Iterable[float]
) -> ModelState:
    """`state` as decide() would carry it through idle ticks at `ticks` (ascending), fed
    `decision`'s observation each time: its service estimate folds in each reading (pure).

    The windows are left as they were: the ticks a driver runs after a skip, for
    `replay_seconds`, rebuild them (see the module docstring).
    """
    rule = policy.sizing
    signals = decision.signals
    if rule is None or not {Signal.REQUEST_RATE, Signal.INFLIGHT_REQUESTS} <= signals.keys():
        return state  # decide() folds nothing into the estimate without these two
    rate = signals[Signal.REQUEST_RATE]
    busy = max(0.0, signals[Signal.INFLIGHT_REQUESTS] - signals.get(Signal.QUEUE_DEPTH, 0.0))
    service = state.service
    for now in ticks:
        service = service.observe(
            rate=rate,
            busy=busy,
            now=now,
            horizon=rule.calibration_seconds,
            rate_horizon=rule.rate_horizon_seconds,
            dispersion_horizon=rule.dispersion_seconds,
            window_s=rule.rate_window_seconds,
        )
    return replace(state, service=service)


def replay_seconds(policy: ModelPolicy, tick_seconds: float) -> float:
    """How long before a skip ends a driver ticks normally again: long enough for every
    window decide() keeps to hold nothing the skipped ticks would have written."""
    windows = (
        policy.cold_start.trend_window_seconds,
        policy.scale_up.stabilization_seconds,
        policy.scale_down.stabilization_seconds,
        policy.scale_up.period_seconds,
        policy.scale_down.period_seconds,
    )
    return max(windows) + 2 * tick_seconds


def _at_rest(policy: ModelPolicy, decision: Decision, state: ModelState, age: float) -> bool:
    """Whether the observation is one decide() reads the same way on every idle tick:
    every targeted signal read and zero, nothing starting, fresh enough, nothing active."""
    signals = decision.signals
    if decision.starting_replicas or decision.ready_replicas != decision.current_replicas:
        return False
    if any(v != 0.0 for v in signals.values()):
        return False
    if any(s not in signals for s, _ in policy.targets.items()):
        return False
    if age > policy.data.stale_after_seconds or Reason.FALLBACK in decision.reasons:
        return False
    if state.consecutive_failures or state.starting_since is not None:
        return False
    rule = policy.scale_to_zero
    # Active means a signal above the threshold (or above 0 without a rule): never, at 0.
    return rule is None or rule.activation_threshold >= 0.0


def _arrival_bound(policy: ModelPolicy, decision: Decision, state: ModelState) -> float | None:
    """A bound on the arrivals (in replicas) of every later idle tick's trend point, or None
    when the sizing could still ask for more than one replica."""
    rule = policy.sizing
    sized = (
        rule is not None
        and Signal.REQUEST_RATE in decision.signals
        and Signal.INFLIGHT_REQUESTS in decision.signals
    )
    if not sized:
        return 0.0  # the targets' demand: every arrival-driven signal reads 0
    assert rule is not None
    if decision.demand != 1:
        return None
    service: ServiceEstimate = state.service
    prior = rule.service_seconds
    # While every reading is 0 the averages only decay, at one rate, so the measured service
    # time (busy / rate) holds and the evidence for it fades: the estimate, a weighted mean
    # of the prior and the measured time, moves from where it is now towards the prior.
    now_s = service.service_seconds(prior, rule.prior_requests, rule.calibration_seconds)
    s_low, s_high = min(prior, now_s), max(prior, now_s)
    if s_low <= 0.0:
        return None
    rate = max(service.mean_rate() or 0.0, service.mean_busy() / s_low)
    load = rate * s_high
    per_replica = rule.slots_per_replica * (1.0 + policy.slo.queue_wait_seconds / s_high)
    # One replica's slots hold floor(per_replica) requests; the count overruns them with
    # probability at most load / (floor + 1) (Markov), which must stay under the miss ratio.
    if load > _SAFETY * policy.sizing_miss_ratio * (math.floor(per_replica) + 1):
        return None
    return load / rule.slots_per_replica
