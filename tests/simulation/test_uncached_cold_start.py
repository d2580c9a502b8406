"""First starts after a fetch (page cache cold) versus warm restarts, in the simulator.

The Mixtral profile here loads in 40 s from the page cache and in 100 s from the volume
(constant durations, so the times are exact). One replica is woken, put to sleep, woken again
and then joined by a second one: only the first start on each node reads the volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from scaler.simulation.autoscaler import ClusterView
from scaler.simulation.engine import Simulation
from scaler.simulation.scenario import ColdStartProfile, ModelProfile
from scaler.simulation.traces import TokenSizes, poisson
from tests.builders import make_policy
from tests.simulation.scenario_builders import PROFILES, make_scenario

MIXTRAL: dict[str, Any] = {
    **PROFILES["mixtral-8x7b"],
    "coldStart": {"medianSeconds": 40},
    "uncachedColdStart": {"medianSeconds": 100},
}


class Timetable:
    """Writes the replica count of the latest entry at or before each tick."""

    interval = 5.0
    name = "timetable"

    def __init__(self, model: str, entries: list[tuple[float, int]]) -> None:
        self.model = model
        self.entries = entries
        self.views: list[ClusterView] = []

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        self.views.append(view)
        due = [n for t, n in self.entries if t <= view.now]
        return {self.model: due[-1]} if due else {}

    def ready_at(self, now: float) -> int:
        (view,) = [v for v in self.views if v.now == now]
        return view.models[self.model].ready_replicas


def _run(
    entries: tuple[tuple[float, int], ...] = ((300, 1), (1000, 0), (1500, 1), (2000, 2)),
    **profile: Any,
) -> Timetable:
    model = "mixtral-8x7b"
    trace = poisson(model, rate=0.001, duration=2400, sizes=TokenSizes(100, 10), seed=3)
    prepared = make_scenario(
        trace,
        policies=[make_policy(model)],
        profiles={model: {**MIXTRAL, **profile}},
        drain_seconds=3000,
    )
    timetable = Timetable(model, list(entries))
    Simulation(prepared, timetable, holds_requests=True).run()
    return timetable


def test_only_the_first_start_on_each_node_reads_the_volume() -> None:
    """Wake at 300 s: 100 s (first start since the fetch). Wake at 1500 s on the same node:
    40 s (its page cache still holds the file). Second replica at 2000 s, on another node
    (one Mixtral per node): 100 s again."""
    timetable = _run()
    assert (timetable.ready_at(395.0), timetable.ready_at(400.0)) == (0, 1)
    assert (timetable.ready_at(1535.0), timetable.ready_at(1540.0)) == (0, 1)
    assert (timetable.ready_at(2095.0), timetable.ready_at(2100.0)) == (1, 2)


def test_a_pod_deleted_while_loading_leaves_its_node_uncached() -> None:
    """Wake at 300 s, scaled back to zero at 350 s (50 s into the 100 s read from the
    volume), woken again at 1500 s on the same node: 100 s again, not the warm 40 s. When
    placing marked the node loaded, the second wake took 40 s."""
    timetable = _run(((300, 1), (350, 0), (1500, 1)))
    assert timetable.ready_at(345.0) == 0
    assert (timetable.ready_at(1595.0), timetable.ready_at(1600.0)) == (0, 1)


def test_without_an_uncached_profile_every_start_is_the_warm_one() -> None:
    """No uncachedColdStart: the first wake takes coldStart (40 s) like the others."""
    timetable = _run(uncachedColdStart=None)
    assert (timetable.ready_at(335.0), timetable.ready_at(340.0)) == (0, 1)
    assert (timetable.ready_at(2035.0), timetable.ready_at(2040.0)) == (1, 2)


def test_the_oracle_plans_with_the_slower_start() -> None:
    """worst_cold_start_seconds is the worst of both profiles (the oracle's pre-warm lead)."""
    profile = ModelProfile.model_validate(
        {**MIXTRAL, "uncachedColdStart": {"medianSeconds": 100, "sigma": 0.2, "maxSeconds": 150}}
    )
    assert profile.worst_cold_start_seconds == 150
    assert profile.uncached_cold_start == ColdStartProfile(
        median_seconds=100, sigma=0.2, max_seconds=150
    )
    warm_only = ModelProfile.model_validate({**MIXTRAL, "uncachedColdStart": None})
    assert warm_only.worst_cold_start_seconds == pytest.approx(40)
