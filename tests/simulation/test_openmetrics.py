"""The OpenMetrics export's adapter and activator series, checked against the simulated run.

Budget: about 2 s (three short single-model runs, no Prometheus).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np
import pytest

from scaler import metric_names
from scaler.activator.metrics import WAIT_BUCKETS
from scaler.api import selfmetrics
from scaler.simulation import openmetrics
from scaler.simulation.engine import SERVED, SimulationResult, simulate
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.traces import TokenSizes, poisson
from tests.builders import make_policy
from tests.simulation.scenario_builders import make_scenario

MODEL = "mixtral-8x7b"  # its shipped policy scales to zero

Samples = dict[tuple[str, str], list[tuple[float, float]]]
_LINE = re.compile(r"^([\w:]+)(\{[^}]*\})? (\S+) (\S+)$")


def _parse(text: str) -> Samples:
    """(name, labels text) -> [(virtual time, value)] of every sample line."""
    samples: Samples = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, line
        name, labels, value, stamp = match.groups()
        samples[name, labels or ""].append(
            (float(stamp) - openmetrics.EPOCH, float(value.replace("+Inf", "inf")))
        )
    return samples


def _last(samples: Samples, name: str, labels: str = f'{{model="{MODEL}"}}') -> float:
    return samples[name, labels][-1][1]


def _run(*, node_gib: float = 90.0, drain_seconds: float = 300.0) -> SimulationResult:
    traffic = poisson(MODEL, rate=0.02, duration=600, sizes=TokenSizes(300, 80), seed=2)
    prepared = make_scenario(
        traffic.shifted(200),
        policies=[make_policy(MODEL)],
        node_gib=node_gib,
        drain_seconds=drain_seconds,
    )
    return simulate(prepared, ScalerPolicy(prepared.policies))


@pytest.fixture(scope="module")
def woken() -> tuple[SimulationResult, Samples]:
    """Mixtral at zero, woken by requests from t=200 on; its export, parsed."""
    result = _run(drain_seconds=1800.0)  # long enough to go back to zero
    return result, _parse(openmetrics.render(result))


def test_buckets_are_the_live_ones() -> None:
    """The histograms use the activator's and the adapter's buckets, so quantiles compare."""
    assert openmetrics.ACTIVATOR_WAIT_BUCKETS == WAIT_BUCKETS
    assert openmetrics.COLD_START_BUCKETS == selfmetrics._COLD_START_BUCKETS


def test_cold_start_duration_is_write_to_first_ready(
    woken: tuple[SimulationResult, Samples],
) -> None:
    """Each wake's write-to-Ready time is in the histogram: count and sum match the run."""
    result, samples = woken
    wakes = [t for t, _, replicas in result.spec_changes if replicas > 0]
    readies = sorted(p.ready for p in result.pods if not p.warm and math.isfinite(p.ready))
    first = wakes[0]
    duration = next(r for r in readies if r >= first) - first
    name = metric_names.COLD_START_DURATION
    assert _last(samples, f"{name}_count") >= 1
    assert duration > 0
    sums = samples[f"{name}_sum", f'{{model="{MODEL}"}}']
    assert min(v for _, v in sums if v > 0) == pytest.approx(duration)
    inf = samples[f"{name}_bucket", f'{{model="{MODEL}",le="+Inf"}}']
    assert inf[-1][1] == _last(samples, f"{name}_count")


def test_pending_is_the_queue_while_no_replica_was_ready(
    woken: tuple[SimulationResult, Samples],
) -> None:
    """At each scrape the activator holds the queue if no replica is Ready, else nothing."""
    result, samples = woken
    series = result.series[0]
    pending = [v for _, v in samples[metric_names.ACTIVATOR_PENDING, f'{{model="{MODEL}"}}']]
    expected = np.where(series.ready == 0, series.queue, 0)
    assert pending == expected.tolist()
    assert max(pending) > 0  # the scenario does hold requests during the cold start


def test_wait_histogram_holds_the_waits_of_held_requests(
    woken: tuple[SimulationResult, Samples],
) -> None:
    """Count and sum of the wait histogram: the held requests' arrival-to-start times."""
    result, samples = woken
    held = result.held & np.isfinite(result.start)
    waits = result.start[held] - result.arrival[held]
    name = metric_names.ACTIVATOR_WAIT
    assert _last(samples, f"{name}_count") == np.count_nonzero(held) > 0
    assert _last(samples, f"{name}_sum") == pytest.approx(float(waits.sum()))
    under_a_second = samples[f"{name}_bucket", f'{{model="{MODEL}",le="1.0"}}'][-1][1]
    assert under_a_second == np.count_nonzero(waits <= 1.0)


def test_forwarded_counts_every_started_request(woken: tuple[SimulationResult, Samples]) -> None:
    """Every request that reached a pod was forwarded; none timed out in a run that woke."""
    result, samples = woken
    assert _last(samples, metric_names.ACTIVATOR_FORWARDED) == np.count_nonzero(
        result.status == SERVED
    )
    assert _last(samples, metric_names.ACTIVATOR_TIMEOUTS) == 0


def test_scale_writes_are_the_zero_crossings(woken: tuple[SimulationResult, Samples]) -> None:
    """scaler's own writes: each change of spec.replicas to or from zero, result ok."""
    result, samples = woken
    previous, crossings = 0, 0
    for _, _, replicas in result.spec_changes:
        crossings += (previous == 0) != (replicas == 0)
        previous = replicas
    assert crossings >= 2  # woke, and went back to zero after the traffic
    labels = f'{{model="{MODEL}",result="ok"}}'
    assert _last(samples, metric_names.SCALE_WRITES, labels) == crossings


def test_metrics_age_is_the_last_tick_minus_its_newest_sample(
    woken: tuple[SimulationResult, Samples],
) -> None:
    """At each scrape: the age the last tick before it saw, i.e. that tick's time minus the
    newest scrape at or before it; the last-tick gauge is that tick's Unix time."""
    result, samples = woken
    scrapes, ticks = result.scrape_times, result.tick_times
    ages = dict(samples[metric_names.DATA_AGE, f'{{model="{MODEL}"}}'])
    last_ticks = dict(samples[metric_names.LAST_TICK, ""])
    assert len(ages) == len(scrapes) - 1  # at t=0 no tick has run yet
    for t in scrapes[1:].tolist():
        tick = float(ticks[ticks < t][-1])
        newest = float(scrapes[scrapes <= tick][-1])
        assert ages[t] == pytest.approx(tick - newest)
        assert last_ticks[t] == pytest.approx(tick + openmetrics.EPOCH)
    assert {v for _, v in samples[metric_names.LEADER, ""]} == {1.0}


def test_held_requests_left_waiting_are_timeouts() -> None:
    """A model that cannot be placed never wakes: every request is held, then given up at
    the end, counted as a timeout and a rejection with reason timeout, never forwarded."""
    result = _run(node_gib=10.0)
    samples = _parse(openmetrics.render(result))
    n = len(result.arrival)
    assert n > 0
    assert _last(samples, metric_names.ACTIVATOR_TIMEOUTS) == n
    rejected = f'{{model="{MODEL}",reason="timeout"}}'
    assert _last(samples, metric_names.ACTIVATOR_REJECTED, rejected) == n
    assert samples[metric_names.ACTIVATOR_REJECTED, rejected][-1][0] == pytest.approx(
        result.duration, abs=1e-3
    )
    assert _last(samples, metric_names.ACTIVATOR_FORWARDED) == 0
    assert _last(samples, f"{metric_names.ACTIVATOR_WAIT}_count") == 0
