"""benchmarks/bench_unseen.py writes valid scenarios on the homelab's cluster and profiles."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_unseen import RATES, SHAPES, unseen_shapes
from scaler.simulation.scenario import PoissonTraffic, check_scenario
from tests.builders import ROOT


def test_every_unseen_shape_loads_with_the_homelab_cluster_and_profiles(tmp_path: Path) -> None:
    paths = unseen_shapes([1, 2], tmp_path)
    assert [p.stem for p in paths] == [f"{s}-s{n}" for n in (1, 2) for s in SHAPES]
    homelab, errors = check_scenario(ROOT / "simulations" / "homelab.yaml")
    assert homelab is not None, errors
    seeds = set()
    for path in paths:
        scenario, errors = check_scenario(path)
        assert scenario is not None, (path.name, errors)
        assert scenario.nodes == homelab.nodes
        assert scenario.models == homelab.models  # the pre-read's cachedNodes included
        seeds.add(scenario.seed)
        if path.stem.startswith("steady-mid"):
            rates = {t.model: t.rate for t in scenario.traffic if isinstance(t, PoissonTraffic)}
            assert rates == {model: rate for model, (rate, _, _) in RATES.items()}
    assert len(seeds) == 2
