"""Fast-forward: skipping idle ticks changes nothing but the cost.

Every bundled scenario (the bench suite and the homelab), and sparse traces that leave the
cluster idle for hours (with a metrics outage, other scrape settings, Mixtral woken from
zero), are simulated under ``scaler`` with every tick run and with idle ticks skipped: the
reports, every series and request, and the decisions the skipping run made are the same,
and so is the state scaler ends with. Every baseline is held to the same on a sparse trace.
A change to the decision core that breaks what ``scaler.core.quiescence`` assumes, or to a
baseline that its ``skippable_until`` does not follow, fails here. The cost of a quiet week
is counted in decide() calls, not seconds (``benchmarks/simulate_speed.py`` prints the time).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scaler.simulation.autoscaler import Autoscaler, ClusterView
from scaler.simulation.comparison import POLICY_NAMES, make_autoscaler
from scaler.simulation.engine import SimulationResult, simulate
from scaler.simulation.report import build_report
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.scenario import Outage, PreparedScenario, prepare
from scaler.simulation.traces import Trace
from tests.builders import ROOT

SIMULATIONS = ROOT / "simulations"
BUNDLED = [SIMULATIONS / "homelab.yaml", *sorted((SIMULATIONS / "bench").glob("*.yaml"))]
WEEK = 7 * 86_400.0


def assert_same(full: object, skipped: object, where: str = "result") -> None:
    """Equal field by field (arrays elementwise, NaN equal to NaN), but for the wall time
    and the decisions, which the caller compares."""
    if dataclasses.is_dataclass(full) and not isinstance(full, type):
        for f in dataclasses.fields(full):
            if f.name not in ("wall_seconds", "decisions"):
                assert_same(getattr(full, f.name), getattr(skipped, f.name), f"{where}.{f.name}")
    elif isinstance(full, np.ndarray):
        assert isinstance(skipped, np.ndarray)
        assert np.array_equal(full, skipped, equal_nan=True), where
    elif isinstance(full, tuple | list):
        assert isinstance(skipped, tuple | list), where
        assert len(full) == len(skipped), where
        for i, (a, b) in enumerate(zip(full, skipped, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(full, dict):
        assert isinstance(skipped, dict), where
        assert full.keys() == skipped.keys(), where
        for key in full:
            assert_same(full[key], skipped[key], f"{where}[{key}]")
    else:
        assert full == skipped or (full != full and skipped != skipped), where  # NaN


def assert_same_state(full: object, fast: object, where: str = "autoscaler") -> None:
    """The same memory, attribute by attribute (objects, deques and mappings walked into;
    bound methods and the kept decisions left out)."""
    if isinstance(full, np.ndarray):
        assert np.array_equal(full, np.asarray(fast)), where
    elif isinstance(full, deque | list | tuple):
        assert isinstance(fast, deque | list | tuple), where
        assert len(full) == len(fast), where
        for i, (a, b) in enumerate(zip(full, fast, strict=True)):
            assert_same_state(a, b, f"{where}[{i}]")
    elif isinstance(full, dict):
        assert isinstance(fast, dict), where
        assert full.keys() == fast.keys(), where
        for key in full:
            assert_same_state(full[key], fast[key], f"{where}[{key}]")
    elif dataclasses.is_dataclass(full) and not isinstance(full, type):
        for f in dataclasses.fields(full):
            assert_same_state(getattr(full, f.name), getattr(fast, f.name), f"{where}.{f.name}")
    elif hasattr(full, "__dict__") or hasattr(full, "__slots__"):
        mine, theirs = _attributes(full), _attributes(fast)
        for name in mine.keys() | theirs.keys():
            if name != "decisions" and not callable(mine.get(name) or theirs.get(name)):
                assert_same_state(mine.get(name), theirs.get(name), f"{where}.{name}")
    else:
        assert full == fast, where


def _attributes(thing: object) -> dict[str, object]:
    names = [*getattr(thing, "__dict__", {}), *getattr(type(thing), "__slots__", ())]
    return {name: getattr(thing, name) for name in names if hasattr(thing, name)}


def assert_same_runs(full: SimulationResult, fast: SimulationResult) -> None:
    """The same report, result and (for the decisions the fast run made) decisions."""
    report, fast_report = build_report(full).to_json(), build_report(fast).to_json()
    report.pop("wall_s")
    fast_report.pop("wall_s")
    assert fast_report == report
    assert_same(full, fast)
    made = {(d.time, d.model): d for d in full.decisions}
    assert all(made[(d.time, d.model)] == d for d in fast.decisions)


def run_both(prepared: PreparedScenario) -> tuple[SimulationResult, SimulationResult]:
    """The scenario under scaler with every tick, then skipping; asserts they agree."""
    every, skipping = ScalerPolicy(prepared.policies), ScalerPolicy(prepared.policies)
    full = simulate(prepared, every, fast_forward=False)
    fast = simulate(prepared, skipping)
    assert_same_runs(full, fast)
    assert skipping.states == every.states
    return full, fast


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_scenario_gives_the_same_results(path: Path) -> None:
    """The bench suite and the homelab scenario, skipping or not."""
    run_both(prepare(path))


def sparse(
    seed: int, *, hours: float, requests: int, scrape: float = 15.0, window: float = 60.0
) -> PreparedScenario:
    """The homelab with a few seeded requests over `hours` (any model, Mixtral included)."""
    homelab = prepare(SIMULATIONS / "homelab.yaml")
    rng = np.random.default_rng(seed)
    span = hours * 3600.0
    times = np.sort(rng.uniform(0.0, span, requests))
    models = rng.integers(0, len(homelab.models), requests).astype(np.int64)
    prompts = rng.integers(50, 3000, requests).astype(np.int64)
    outputs = rng.integers(5, 600, requests).astype(np.int64)
    trace = Trace(homelab.models, times, models, prompts, outputs)
    metrics = homelab.scenario.metrics.model_copy(
        update={"scrape_interval_seconds": scrape, "rate_window_seconds": window}
    )
    return replace(
        homelab, trace=trace, scenario=homelab.scenario.model_copy(update={"metrics": metrics})
    )


@pytest.mark.parametrize(
    ("seed", "scrape", "window"), [(1, 15.0, 60.0), (2, 7.0, 20.0), (3, 30.0, 60.0)]
)
def test_sparse_traffic_gives_the_same_results_in_fewer_decisions(
    seed: int, scrape: float, window: float
) -> None:
    """Hours idle between requests: the ticks skipped change nothing."""
    full, fast = run_both(sparse(seed, hours=8, requests=10, scrape=scrape, window=window))
    assert len(fast.decisions) < 0.75 * len(full.decisions)


class CountingTicks:
    """An autoscaler, counting the ticks the engine asks it for."""

    def __init__(self, autoscaler: Autoscaler) -> None:
        self.inner = autoscaler
        self.asked = 0
        original = autoscaler.tick

        def counted(view: ClusterView) -> Mapping[str, int]:
            self.asked += 1
            return original(view)

        autoscaler.tick = counted  # type: ignore[method-assign]  # a test seam


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_gives_the_same_results_on_sparse_traffic(policy: str) -> None:
    """scaler and every baseline, over hours idle between requests and a metrics outage:
    the same results and the same memory at the end, and fewer ticks asked for than
    recorded."""
    prepared = sparse(5, hours=6, requests=8)
    outage = Outage(start_seconds=9_000.0, end_seconds=10_000.0)
    metrics = prepared.scenario.metrics.model_copy(update={"metrics_outage": (outage,)})
    prepared = replace(prepared, scenario=prepared.scenario.model_copy(update={"metrics": metrics}))
    every = make_autoscaler(policy, prepared)
    full = simulate(prepared, every, fast_forward=False)
    counting = CountingTicks(make_autoscaler(policy, prepared))
    fast = simulate(prepared, counting.inner)
    assert_same_runs(full, fast)
    assert_same_state(every, counting.inner)
    # 1,202 of 3,611 with every sizing aimed at the SLO's 99.5; tinyllama's 99.9 makes the
    # Markov bound of quiescence.py prove its rest five times later (1,819).
    assert counting.asked < 0.6 * len(fast.tick_times)


def test_an_outage_during_an_idle_stretch_gives_the_same_results() -> None:
    """A metrics outage ends a skip: its ticks, and the ones after it, run."""
    prepared = sparse(4, hours=6, requests=6)
    outage = Outage(start_seconds=7_000.0, end_seconds=9_000.0)
    metrics = prepared.scenario.metrics.model_copy(update={"metrics_outage": (outage,)})
    scenario = prepared.scenario.model_copy(update={"metrics": metrics})
    full, fast = run_both(replace(prepared, scenario=scenario))
    assert len(fast.decisions) < len(full.decisions)
    during = [d for d in fast.decisions if 7_000.0 <= d.time < 9_000.0]
    assert len(during) == len([d for d in full.decisions if 7_000.0 <= d.time < 9_000.0])


def test_a_quiet_week_costs_a_bounded_number_of_decisions() -> None:
    """A week with six requests: decide() runs for minutes of virtual time around each
    request, not for every 5 s of the week (120,960 ticks of four models)."""
    homelab = prepare(SIMULATIONS / "homelab.yaml")
    times = np.array([600.0, 0.5 * 86_400, 2 * 86_400, 3.5 * 86_400, 5 * 86_400, WEEK - 3_600])
    models = np.array([0, 1, 2, 3, 0, 3], dtype=np.int64)
    sizes = np.full(6, 400, dtype=np.int64)
    prepared = replace(homelab, trace=Trace(homelab.models, times, models, sizes, sizes))
    scaler = ScalerPolicy(prepared.policies)
    result = simulate(prepared, scaler)
    ticks = len(result.tick_times)
    assert ticks > times[-1] / scaler.interval  # every tick recorded, skipped or not
    # About two hours of ticks for each request at most (the sized averages decay first).
    assert len(scaler.decisions) <= len(prepared.models) * 6 * 2 * 3600 / scaler.interval
    assert len(scaler.decisions) < ticks * len(prepared.models) / 50
