"""Scenarios stepped through decide() on virtual time (5 s ticks, toy cluster in Driver).

Most pin the per-signal target path (``make_target_policy``: the shipped policy without its
sizing section), with loads written in target units; test_sizing_scenarios.py has the same
stories for the shipped, sized policies.
"""

from __future__ import annotations

from scaler.core import Reason, Signal
from tests.builders import Driver, make_policy, make_target_policy, signals


def test_burst_scales_up_at_once_and_down_after_the_window() -> None:
    """A 2-minute burst adds replicas on the next tick; they go after the 300 s down window."""
    policy = make_target_policy(scaleDown={"stabilizationSeconds": 300})

    def load(t: float) -> dict[Signal, float]:
        busy = 60.0 <= t < 180.0
        return signals(queue=6.0 if busy else 0.0, inflight=10.0 if busy else 1.0, rate=0.1)

    driver = Driver(policy, load, current=1)
    driver.run(until=60.0)
    assert driver.current == 1
    first = driver.step()  # t = 60: the burst is seen
    assert first.desired_replicas == 3
    driver.run(until=180.0)
    assert driver.current == 3
    driver.run(until=180.0 + 295.0)
    assert driver.current == 3, "a dip must last the down window"
    driver.run(until=180.0 + 320.0)
    assert driver.current == 2  # one step down at a time
    driver.run(until=180.0 + 700.0)
    assert driver.current == 1


def test_quiet_night_keeps_always_on_model_at_min_without_flapping() -> None:
    """Eight quiet hours: one replica, no scale event, no reason but Demand/bounds."""
    policy = make_policy("tinyllama")
    driver = Driver(policy, lambda t: signals(rate=0.01, tokens=0.5), current=1, interval=15.0)
    decisions = driver.run(until=8 * 3600.0)
    assert {d.desired_replicas for d in decisions} == {1}
    assert all(not d.changed for d in decisions)


def test_mixtral_session_after_hours_of_silence() -> None:
    """Hours at zero; the first held request wakes it at once; idle 15 min later it goes."""
    policy = make_target_policy(
        "mixtral-8x7b", scaleToZero={"idleSeconds": 900, "restartCostSeconds": 3600}
    )
    session = (4 * 3600.0, 4 * 3600.0 + 600.0)

    def load(t: float) -> dict[Signal, float]:
        if session[0] <= t < session[1]:
            return signals(queue=1.0, inflight=2.0, rate=0.02, tokens=5.0)
        return signals()

    driver = Driver(policy, load, current=0, interval=5.0)
    silent = driver.run(until=session[0])
    assert {d.desired_replicas for d in silent} == {0}
    wake = driver.step()
    assert wake.desired_replicas == 1
    assert Reason.SCALE_FROM_ZERO in wake.reasons
    driver.run(until=session[1] + 895.0)
    assert driver.current == 1, "not before the 900 s idle period"
    driver.run(until=session[1] + 910.0)
    assert driver.current == 0
    scale_ups = [d for d in driver.decisions if d.desired_replicas > d.current_replicas]
    assert len(scale_ups) == 1, "one wake-up, never a second request for the same replica"


def test_prometheus_gap_never_scales_down() -> None:
    """A 20-minute outage holds 3 replicas and does not let Mixtral's idle clock run."""
    policy = make_target_policy(scaleDown={"stabilizationSeconds": 0})
    outage = (600.0, 1800.0)
    driver = Driver(
        policy,
        lambda t: signals(queue=6.0) if t < outage[0] else signals(),
        current=1,
        metrics_down=lambda t: outage[0] <= t < outage[1],
    )
    driver.run(until=outage[0])
    assert driver.current == 3
    during = driver.run(until=outage[1])
    assert {d.desired_replicas for d in during} == {3}
    assert all(d.reasons[0] in (Reason.NO_DATA, Reason.STALE_DATA) for d in during)
    after = driver.step()  # data is back and says the load is gone
    assert after.desired_replicas == 2


def test_mixtral_idle_clock_restarts_after_an_outage() -> None:
    """An outage in the middle of the idle period does not count as idle time."""
    policy = make_policy(
        "mixtral-8x7b", scaleToZero={"idleSeconds": 900, "restartCostSeconds": 3600}
    )
    driver = Driver(
        policy,
        lambda t: signals(),
        current=1,
        metrics_down=lambda t: 300.0 <= t < 1200.0,
    )
    driver.run(until=1200.0 + 895.0)
    assert driver.current == 1
    driver.run(until=1200.0 + 905.0)
    assert driver.current == 0


def test_slow_cold_start_under_rising_load_does_not_cascade() -> None:
    """Queue grows while a 90 s replica loads: no 2 -> 4 -> 8 cascade (aibrix#2670)."""
    policy = make_target_policy(replicas={"max": 12}, scaleUp={"maxStep": 4})

    def load(t: float) -> dict[Signal, float]:
        # Arrivals step to 0.4 req/s (3 replicas' worth); the backlog grows while pods load.
        backlog = max(0.0, (t - 30.0) * 0.3)
        return signals(queue=backlog, inflight=backlog + 4.0, rate=0.4)

    driver = Driver(policy, load, current=1, cold_start=90.0)
    driver.run(until=90.0)  # the replicas requested at t = 0 are ready at t = 90
    assert driver.current == 3, "arrival rate asks for 3; backlog growth adds nothing"
    assert any(Reason.COLD_START_HOLD in d.reasons for d in driver.decisions)
    # Once they are ready the accumulated backlog is real demand again.
    driver.run(until=100.0)
    assert driver.current > 3


def test_rising_load_is_met_ahead_of_time() -> None:
    """With a steady ramp, replicas are requested before the load reaches them."""
    policy = make_target_policy(replicas={"max": 12}, scaleUp={"maxStep": 4})
    ramp = 0.15 / 60.0  # one replica's worth of requests more every minute

    driver = Driver(policy, lambda t: signals(rate=0.1 + ramp * t), current=1, cold_start=90.0)
    driver.run(until=600.0)
    needed_now = (0.1 + ramp * driver.now) / 0.15
    assert driver.current >= needed_now + 1, "the 90 s projection keeps capacity ahead"
    assert any(Reason.TREND_PROJECTED in d.reasons for d in driver.decisions)
