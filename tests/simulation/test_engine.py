"""The simulation engine: conservation, queueing laws, cold starts, placement, metrics view."""

from __future__ import annotations

import gc
from collections.abc import Mapping

import numpy as np
import pytest

from scaler.core import Signal
from scaler.simulation.autoscaler import ClusterView
from scaler.simulation.engine import DROPPED, SERVED, Simulation, simulate
from scaler.simulation.report import build_report
from scaler.simulation.traces import TokenSizes, Trace, poisson
from tests.builders import make_policy
from tests.simulation.scenario_builders import make_scenario


class Fixed:
    """Holds every model at a fixed count from `at` seconds on (before: untouched)."""

    interval = 5.0

    def __init__(self, replicas: Mapping[str, int], *, at: float = 0.0, name: str = "fixed"):
        self.replicas = dict(replicas)
        self.at = at
        self.name = name
        self.views: list[ClusterView] = []

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        self.views.append(view)
        return self.replicas if view.now >= self.at else {}


class Chaos:
    """Writes a random replica count (0-3) for every model each tick."""

    interval = 5.0

    def __init__(self, seed: int, name: str = "chaos") -> None:
        self.rng = np.random.default_rng(seed)
        self.name = name

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        return {name: int(self.rng.integers(0, 4)) for name in view.models}


def steady(rate: float, duration: float, seed: int = 1, model: str = "tinyllama") -> Trace:
    return poisson(model, rate=rate, duration=duration, sizes=TokenSizes(400, 120), seed=seed)


@pytest.mark.parametrize("holds", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_request_is_served_or_dropped_exactly_once(holds: bool, seed: int) -> None:
    """Under random scaling, each request ends once: served (with times) or dropped."""
    policies = [make_policy("tinyllama"), make_policy("mixtral-8x7b")]
    traffic = [steady(0.5, 1500, seed), steady(0.05, 1500, seed + 10, "mixtral-8x7b")]
    prepared = make_scenario(traffic, policies=policies, drain_seconds=120)
    result = Simulation(prepared, Chaos(seed), holds_requests=holds).run()
    n = len(prepared.trace)
    served = result.status == SERVED
    dropped = result.status == DROPPED
    assert np.all(served ^ dropped)
    assert np.count_nonzero(served) + np.count_nonzero(dropped) == n
    assert np.all(np.isfinite(result.end[served]))
    assert np.all(result.end[served] >= result.start[served])
    assert np.all(result.start[served] >= result.arrival[served])
    assert np.all(np.isnan(result.end[dropped]))
    assert 0 < np.count_nonzero(dropped) < n  # the chaos does drop some, and serves most
    assert sum(int(s.arrivals[-1]) for s in result.series) == n


def test_littles_law_on_steady_poisson_load() -> None:
    """Time-average requests in the system (sampled at scrapes) = arrival rate x mean sojourn."""
    duration = 20_000.0
    prepared = make_scenario(steady(0.4, duration, seed=5), drain_seconds=300)
    result = Simulation(prepared, Fixed({"tinyllama": 1}), holds_requests=True).run()
    served = result.status == SERVED
    assert served.all()
    sojourn = float(np.mean(result.end - result.arrival))
    rate = len(result.arrival) / duration
    series = result.series[0]
    inside = result.scrape_times < duration
    in_system = float(np.mean(series.queue[inside] + series.running[inside]))
    assert np.mean(result.start > result.arrival) > 0.05  # some queueing happens
    assert in_system == pytest.approx(rate * sojourn, rel=0.04)


def test_zero_queue_wait_when_capacity_is_ample() -> None:
    """Light load on three warm replicas: no request ever waits."""
    prepared = make_scenario(steady(0.05, 3000, seed=2), policies=[make_policy("tinyllama")])
    result = Simulation(prepared, Fixed({"tinyllama": 3}), holds_requests=True).run()
    assert np.all(result.status == SERVED)
    assert np.all(result.start == result.arrival)


def test_non_holding_policy_drops_requests_at_zero_replicas() -> None:
    """hpa/keda-like: nothing ready means a 503 for every arrival."""
    policies = [make_policy("mixtral-8x7b")]  # min 0: starts at zero
    prepared = make_scenario(steady(0.1, 600, model="mixtral-8x7b"), policies=policies)
    result = Simulation(prepared, Fixed({}), holds_requests=False).run()
    assert np.all(result.status == DROPPED)


def test_holding_policy_serves_requests_once_a_replica_is_ready() -> None:
    """scaler/kpa-like: requests wait through the cold start and are then served."""
    policies = [make_policy("mixtral-8x7b")]
    trace = steady(0.02, 600, seed=4, model="mixtral-8x7b")
    prepared = make_scenario(trace, policies=policies)
    result = Simulation(prepared, Fixed({"mixtral-8x7b": 1}, at=300.0), holds_requests=True).run()
    assert np.all(result.status == SERVED)
    early = result.arrival < 300
    assert early.any()
    # Scaled up at 300 s, ready 40 s later: nothing starts before then.
    assert result.start[early].min() == pytest.approx(340.0)


def test_pods_become_ready_after_their_cold_start() -> None:
    """A replica requested at t=100 is starting for its cold start (8 s), then ready."""
    prepared = make_scenario(steady(0.01, 300), policies=[make_policy("tinyllama")])
    autoscaler = Fixed({"tinyllama": 2}, at=100.0)
    result = Simulation(prepared, autoscaler).run()
    by_time = {v.now: v.models["tinyllama"] for v in autoscaler.views}
    assert by_time[105.0].ready_replicas == 1
    assert by_time[105.0].spec_replicas == 2
    assert by_time[110.0].ready_replicas == 2
    # The warm replica the run starts with loaded nothing: one cold start.
    assert build_report(result).models["tinyllama"].cold_starts == 1


def test_pods_that_do_not_fit_stay_pending_and_count_as_unplaceable() -> None:
    """Two 30 GiB replicas on one 40 GiB node: one runs, one waits, all the time."""
    policies = [make_policy("mixtral-8x7b", placement={"maxPerNode": 2})]
    prepared = make_scenario(
        steady(0.01, 1000, model="mixtral-8x7b"), policies=policies, nodes=1, node_gib=40
    )
    result = Simulation(prepared, Fixed({"mixtral-8x7b": 2}), holds_requests=True).run()
    report = build_report(result).models["mixtral-8x7b"]
    assert int(result.series[0].pending.max()) == 1
    assert report.unplaceable_s == pytest.approx(result.duration, rel=1e-6)
    assert report.replica_seconds == pytest.approx(result.duration, rel=1e-6)


def test_metrics_outage_hides_every_signal() -> None:
    """During a metrics outage the autoscaler sees no signal and no sample time."""
    prepared = make_scenario(
        steady(0.5, 1200),
        metrics={"metricsOutage": [{"startSeconds": 300, "endSeconds": 600}]},
    )
    autoscaler = Fixed({})
    simulate(prepared, autoscaler)
    during = [v.models["tinyllama"].observation for v in autoscaler.views if 300 <= v.now < 600]
    after = [v.models["tinyllama"].observation for v in autoscaler.views if v.now >= 700]
    assert during
    assert all(not o.signals and o.sample_time is None for o in during)
    assert all(Signal.REQUEST_RATE in o.signals for o in after)


def test_observed_rates_are_windowed_counter_rates() -> None:
    """The request-rate signal averages to the arrival rate; gauges come from the last scrape."""
    prepared = make_scenario(steady(0.5, 6000, seed=8))
    autoscaler = Fixed({"tinyllama": 3})
    simulate(prepared, autoscaler)
    views = [v for v in autoscaler.views if v.now < 6000]  # the drain after it has no traffic
    observations = [v.models["tinyllama"].observation for v in views]
    rates = [
        o.signals[Signal.REQUEST_RATE] for o in observations if Signal.REQUEST_RATE in o.signals
    ]
    assert np.mean(rates) == pytest.approx(0.5, rel=0.05)
    stamps = [o.sample_time for o in observations]
    assert None not in stamps
    ages = [v.now - (t or 0.0) for v, t in zip(views, stamps, strict=True)]
    assert max(ages) < 15.0 + 1e-9  # never older than one scrape interval
    tokens = [o.signals[Signal.TOKENS_PER_SECOND] for o in observations if len(o.signals) == 4]
    assert np.mean(tokens) == pytest.approx(0.5 * 120, rel=0.1)


def test_unfinished_requests_at_the_horizon_are_dropped() -> None:
    """With no replica ever, held requests count as dropped when the run ends."""
    policies = [make_policy("mixtral-8x7b")]
    prepared = make_scenario(
        steady(0.05, 300, model="mixtral-8x7b"), policies=policies, drain_seconds=60
    )
    result = Simulation(prepared, Fixed({}), holds_requests=True).run()
    assert np.all(result.status == DROPPED)
    assert result.duration == pytest.approx(prepared.trace.duration + 60)


def test_scale_down_lets_running_requests_finish() -> None:
    """A Ready pod removed while busy drains its requests instead of dropping them."""
    trace = steady(1.0, 200, seed=9)
    prepared = make_scenario(trace, policies=[make_policy("tinyllama")])

    class Shrink:
        name = "shrink"
        interval = 5.0

        def tick(self, view: ClusterView) -> Mapping[str, int]:
            return {"tinyllama": 3 if view.now < 100 else 1}

    result = Simulation(prepared, Shrink(), holds_requests=False).run()
    assert np.all(result.status == SERVED)


def test_a_run_gives_the_collector_back_as_it_found_it() -> None:
    """A run makes no automatic full collection, and restores the thresholds after."""
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    class Watching(Fixed):
        def tick(self, view: ClusterView) -> Mapping[str, int]:
            seen.append(gc.get_threshold())
            return super().tick(view)

    prepared = make_scenario([steady(0.1, 300)], policies=[make_policy("tinyllama")])
    simulate(prepared, Watching({"tinyllama": 1}))
    assert seen
    assert {t[2] for t in seen} == {2**31 - 1}
    assert gc.get_threshold() == before
