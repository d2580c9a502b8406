"""quiescence: an idle model's decision holds as promised, and a skip ends in decide()'s state.

Each case drives decide() through a busy stretch and then idleness (every signal 0) until
`quiet_until` makes a promise, then compares two ways on: every tick run (the truth), and
the promised ticks skipped (`advance`) with the last `replay_seconds` of them run again. The
truth's replica count must hold over the promise, and the skip must end in the truth's
decisions and state, exactly.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import ModelPolicy, Observation, Reason, Signal, decide
from scaler.core.quiescence import advance, quiet_until, replay_seconds
from scaler.policy import load_policies
from tests.builders import POLICIES, Driver, make_policy, signals

INTERVAL = 5.0
SHIPPED = sorted(load_policies(POLICIES), key=lambda p: p.model)
POLICY_CHOICES = [
    *SHIPPED,
    *(p.model_copy(update={"sizing": None}) for p in SHIPPED),
    # The sizing aiming above and below the SLO's own percentile.
    make_policy("mistral-7b", sizing={"aimPercentile": 99.95}),
    make_policy("tinyllama", sizing={"aimPercentile": 90}),
]
IDLE = signals()


def quiet_driver(policy: ModelPolicy, busy: list[dict[Signal, float]]) -> Driver | None:
    """A driver past `busy` (one load per tick) and idle until decide()'s last decision is
    promised to hold for at least a minute; None if no promise comes within 12 hours."""
    loads = iter(busy)
    driver = Driver(policy, lambda _t: next(loads, IDLE), current=max(1, policy.replicas.min))
    for _ in busy:
        driver.step()
    while driver.now < 12 * 3600:
        decision = driver.step()
        promised = quiet_until(
            policy, decision, driver.state, sample_age=0.0, tick_seconds=INTERVAL
        )
        if promised > decision.time + 60:
            return driver
    return None


def check_skip(driver: Driver, ticks: int) -> None:
    """From the driver's last decision on: the truth over `ticks` ticks against a skip."""
    policy, decision, state = driver.policy, driver.decisions[-1], driver.state
    promised = quiet_until(policy, decision, state, sample_age=0.0, tick_seconds=INTERVAL)
    times = [driver.now + k * INTERVAL for k in range(ticks)]
    times = [t for t in times if t < promised]
    replay = math.ceil(replay_seconds(policy, INTERVAL) / INTERVAL)
    if len(times) <= replay:
        return
    truth = [driver.step() for _ in times]
    assert {d.desired_replicas for d in truth} == {decision.desired_replicas}
    skipped, replayed = times[:-replay], times[-replay:]
    skipping = advance(policy, decision, state, skipped)
    again = []
    for now in replayed:
        # What the driver observes on an idle tick: every signal 0, sampled now.
        observation = Observation(
            policy.model, dict(IDLE), now, decision.current_replicas, decision.ready_replicas
        )
        made, skipping = decide(observation, policy, skipping, driver.cluster, now)
        again.append(made)
    assert again == truth[-replay:]
    assert skipping == driver.state


loads = st.lists(
    st.builds(
        signals,
        queue=st.floats(0, 20),
        tokens=st.floats(0, 200),
        inflight=st.floats(0, 20),
        rate=st.floats(0, 2),
    ),
    min_size=0,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICY_CHOICES), busy=loads, ticks=st.integers(50, 3000))
def test_a_promise_holds_and_a_skip_ends_in_decides_state(
    policy: ModelPolicy, busy: list[dict[Signal, float]], ticks: int
) -> None:
    """Any shipped policy (sized, with another aim, or by targets), after any busy stretch."""
    driver = quiet_driver(policy, busy)
    assert driver is not None, "idleness never became quiet within 12 hours"
    check_skip(driver, ticks)


def test_an_awake_on_demand_model_is_promised_until_its_keep_alive() -> None:
    """Mixtral idle and awake (by its targets: the sizing's averages would take longer to
    settle than the keep-alive): the promise ends a tick before the keep-alive runs out, and
    the ticks after it go to zero."""
    # Priced at 200 s a restart keeps it 200 s until gaps are known: a promise of more than
    # the minute quiet_driver waits for while it is still awake (the shipped 60 s is not).
    policy = make_policy("mixtral-8x7b", sizing=None, scaleToZero={"restartCostSeconds": 200})
    driver = quiet_driver(policy, [signals(inflight=1, rate=0.02)] * 10)
    assert driver is not None
    decision = driver.decisions[-1]
    assert decision.current_replicas == 1
    promised = quiet_until(policy, decision, driver.state, sample_age=0.0, tick_seconds=INTERVAL)
    assert driver.state.idle_since is not None
    assert decision.keep_alive_s is not None
    assert promised == driver.state.idle_since + decision.keep_alive_s - INTERVAL
    while driver.now < promised:
        assert driver.step().desired_replicas == 1
    later = [driver.step() for _ in range(3)]
    assert Reason.SCALE_TO_ZERO in {r for d in later for r in d.reasons}


def test_no_promise_while_anything_is_going_on() -> None:
    """A signal above zero, a replica starting, a stale sample: no promise."""
    policy = make_policy()
    driver = quiet_driver(policy, [])
    assert driver is not None
    decision, state = driver.decisions[-1], driver.state
    busy = replace(decision, signals={**decision.signals, Signal.QUEUE_DEPTH: 1.0})
    starting = replace(decision, starting_replicas=1, ready_replicas=0)
    for case, age in ((busy, 0.0), (starting, 0.0), (decision, 61.0)):
        promised = quiet_until(policy, case, state, sample_age=age, tick_seconds=INTERVAL)
        assert promised == case.time
