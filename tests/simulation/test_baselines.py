"""Scripted scenarios for the hpa, keda and kpa baselines, on virtual time, no engine.

A tiny driver builds a ClusterView per tick by hand, applies the replicas the baseline asks
for at once, and makes them ready at once, so each test reads the baseline's own rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scaler.core import ClusterState, ModelPolicy, Observation, Signal
from scaler.simulation.autoscaler import Autoscaler, ClusterView, ModelView
from scaler.simulation.baselines import HpaBaseline, KedaBaseline, KpaBaseline
from tests.builders import make_policy, signals

# Only the in-flight target: one replica per 4 in-flight requests, up to 10 replicas.
INFLIGHT_ONLY = {"queueDepth": None, "tokensPerSecond": None, "requestRate": None}

Load = Callable[[float], tuple[Mapping[Signal, float], int]]
"""Signals Prometheus shows, and the exact in-flight count, at a virtual time."""


def _inflight_load(level: Callable[[float], int]) -> Load:
    # The request rate shown (0.01/s) stays under every shipped rate target, so the in-flight
    # count alone sets the HPA's proposal.
    def load(t: float) -> tuple[Mapping[Signal, float], int]:
        n = level(t)
        return signals(inflight=n, rate=0.01 if n else 0.0), n

    return load


@dataclass
class Script:
    """Steps one model through an autoscaler; replicas are applied and ready at once."""

    autoscaler: Autoscaler
    policy: ModelPolicy
    load: Load
    replicas: int
    now: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def step(self) -> int:
        """One tick at `now`; returns the replicas after it and advances the clock."""
        shown, inflight = self.load(self.now)
        name = self.policy.model
        observation = Observation(name, dict(shown), self.now, self.replicas, self.replicas)
        view = ClusterView(
            self.now,
            {name: ModelView(name, observation, self.replicas, self.replicas, inflight)},
            ClusterState(),
        )
        self.replicas = self.autoscaler.tick(view).get(name, self.replicas)
        self.timeline.append((self.now, self.replicas))
        self.now += self.autoscaler.interval
        return self.replicas

    def run(self, until: float) -> list[tuple[float, int]]:
        """Tick until `until` (exclusive); the (time, replicas) pairs on the way."""
        start = len(self.timeline)
        while self.now < until:
            self.step()
        return self.timeline[start:]

    def first_time(self, replicas: int) -> float:
        """When the count was first `replicas` after a tick."""
        return next(t for t, r in self.timeline if r == replicas)


# --- KEDA --------------------------------------------------------------------------------


def test_keda_scales_to_zero_one_cooldown_after_last_activity() -> None:
    """Idle from t=100: last active poll at 90, zero at the first poll after 90 + 300."""
    policy = make_policy("mixtral-8x7b")
    keda = KedaBaseline([policy])
    script = Script(keda, policy, _inflight_load(lambda t: 1 if t < 100 else 0), replicas=1)
    script.run(600)
    assert keda.last_active(policy.model) == 90
    zero_at = script.first_time(0)
    assert 300 < zero_at - 90 <= 300 + keda.polling_interval
    assert zero_at == 420


def test_keda_wakes_on_first_poll_seeing_activity() -> None:
    """At 0, activity from t=40 is seen by the poll at 60 (not the HPA sync at 45)."""
    policy = make_policy("mixtral-8x7b")
    script = Script(
        KedaBaseline([policy]), policy, _inflight_load(lambda t: 1 if t >= 40 else 0), replicas=0
    )
    timeline = dict(script.run(75))
    assert (timeline[30], timeline[45], timeline[60]) == (0, 0, 1)


def test_keda_reads_empty_prometheus_as_zero_and_scales_to_zero() -> None:
    """Prometheus answers nothing from t=60: ignoreNullValues reads 0, zero after cooldown.

    This is KEDA's known outage behaviour (kedacore/keda#965, #3064) that scaler avoids by
    holding on missing data; the baseline reproduces it on purpose.
    """
    policy = make_policy("mixtral-8x7b")

    def load(t: float) -> tuple[Mapping[Signal, float], int]:
        if t < 60:
            return signals(inflight=1, rate=0.01), 1
        return {}, 1  # requests still in flight, but Prometheus shows no series

    keda = KedaBaseline([policy])
    script = Script(keda, policy, load, replicas=1)
    script.run(500)
    assert keda.last_active(policy.model) == 30
    assert script.first_time(0) == 360


def test_keda_without_ignore_null_values_holds_on_empty_answers() -> None:
    """With ignoreNullValues false an empty answer is an error: no scale-in at all."""
    policy = make_policy("mixtral-8x7b")

    def load(t: float) -> tuple[Mapping[Signal, float], int]:
        return (signals(inflight=1, rate=0.01), 1) if t < 60 else ({}, 1)

    script = Script(KedaBaseline([policy], ignore_null_values=False), policy, load, replicas=1)
    assert all(r == 1 for _, r in script.run(900))


# --- KPA ---------------------------------------------------------------------------------


def test_kpa_enters_panic_at_twice_the_target() -> None:
    """6 in flight from t=10, target 4 × 0.7 = 2.8, 1 ready pod.

    t=10: 6 s mean (0, 0, 6) = 2 -> ceil(2/2.8)/1 = 1 < 2: stable.
    t=12: 6 s mean (0, 6, 6) = 4 -> ceil(4/2.8)/1 = 2 >= 2: panic.
    """
    policy = make_policy(targets=INFLIGHT_ONLY, replicas={"max": 10})
    kpa = KpaBaseline([policy])
    script = Script(kpa, policy, _inflight_load(lambda t: 6 if t >= 10 else 0), replicas=1)
    script.run(12)
    assert not kpa.panicking(policy.model)
    script.step()
    assert kpa.panicking(policy.model)


def test_kpa_never_scales_down_in_panic_and_leaves_after_60_seconds() -> None:
    """20 in flight for t in [10, 30): panic from t=10 (ceil(6.67/2.8)/1 = 3 >= 2), never
    re-triggered once pods are up; the count holds through t=70 and may fall at t=72.
    """
    policy = make_policy(targets=INFLIGHT_ONLY, replicas={"max": 10})
    kpa = KpaBaseline([policy])
    script = Script(kpa, policy, _inflight_load(lambda t: 20 if 10 <= t < 30 else 0), replicas=1)
    panic: dict[float, bool] = {}
    while script.now <= 72:
        script.step()
        panic[script.timeline[-1][0]] = kpa.panicking(policy.model)
    assert not panic[8]
    assert all(panic[t] for t in range(10, 71, 2))
    assert not panic[72]
    in_panic = [r for t, r in script.timeline if 10 <= t <= 70]
    assert in_panic == sorted(in_panic)  # never down while panicking
    assert dict(script.timeline)[72] < dict(script.timeline)[70]


def test_kpa_scales_to_zero_after_stable_window_and_grace() -> None:
    """Last request sample at t=18: the 60 s mean is 0 from t=78, zero 30 s later (t=108)."""
    policy = make_policy("mixtral-8x7b")
    script = Script(
        KpaBaseline([policy]), policy, _inflight_load(lambda t: 1 if t < 20 else 0), replicas=1
    )
    timeline = dict(script.run(120))
    assert timeline[106] == 1
    assert timeline[108] == 0


def test_kpa_wakes_from_zero_on_first_request() -> None:
    """At zero, the first tick that sees a held request scales to 1 (the activator's poke)."""
    policy = make_policy("mixtral-8x7b")
    script = Script(
        KpaBaseline([policy]), policy, _inflight_load(lambda t: 1 if t >= 201 else 0), replicas=1
    )
    timeline = dict(script.run(210))
    assert timeline[200] == 0
    assert timeline[202] == 1


def test_kpa_keeps_always_on_model_at_one() -> None:
    """An always-on model (min 1) stays at one replica however long it idles."""
    policy = make_policy(targets=INFLIGHT_ONLY)
    script = Script(KpaBaseline([policy]), policy, _inflight_load(lambda t: 0), replicas=1)
    assert all(r == 1 for _, r in script.run(300))


# --- HPA ---------------------------------------------------------------------------------


def test_hpa_follows_total_over_target() -> None:
    """26 in flight, target 4: ceil(26/4) = 7, reached as 1 -> 4 (cap max(2·1, 4)) -> 7."""
    policy = make_policy(targets=INFLIGHT_ONLY, replicas={"max": 10})
    script = Script(HpaBaseline([policy]), policy, _inflight_load(lambda t: 26), replicas=1)
    assert [r for _, r in script.run(45)] == [4, 7, 7]


def test_hpa_scale_down_waits_for_300_second_window() -> None:
    """Load drops at t=60 (last 7 recommended at t=45): 7 holds until t=345, 1 at t=360."""
    policy = make_policy(targets=INFLIGHT_ONLY, replicas={"max": 10})
    script = Script(
        HpaBaseline([policy]), policy, _inflight_load(lambda t: 26 if t < 60 else 4), replicas=7
    )
    timeline = dict(script.run(400))
    assert timeline[345] == 7
    assert timeline[360] == 1


def test_hpa_holds_on_missing_metric() -> None:
    """No series for the targeted signal: the HPA keeps its count (FailedGetExternalMetric)."""
    policy = make_policy(targets=INFLIGHT_ONLY, replicas={"max": 10})
    hpa = HpaBaseline([policy])
    script = Script(hpa, policy, lambda t: ({}, 0), replicas=5)
    assert all(r == 5 for _, r in script.run(900))
    assert hpa.last_syncs[policy.model].reason == "FailedGetExternalMetric"


def test_hpa_never_leaves_zero() -> None:
    """An on-demand model at 0 stays there under the plain HPA (ScalingDisabled)."""
    policy = make_policy("mixtral-8x7b")
    script = Script(HpaBaseline([policy]), policy, _inflight_load(lambda t: 3), replicas=0)
    assert all(r == 0 for _, r in script.run(300))
