"""``hpaSyncPeriodSeconds``: every HPA of a run syncs on the cluster's period.

kube-controller-manager's ``--horizontal-pod-autoscaler-sync-period`` is one flag for every
HPA in the cluster, so the scenario field applies to scaler's HPAs and to the HPA-based
baselines alike. An HPA changes ``spec.replicas`` only at a sync; scaler ticks every 5 s (its
emulated HPAs sync at the first tick a sync is due), so with a 10 s period the syncs are told
apart from the ticks, and from the default 15 s, by their times.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import simulate
from scaler.simulation.scenario import prepare
from tests.builders import ROOT

PERIOD = 10.0


def _on_grid(time: float, period: float) -> bool:
    return abs(time / period - round(time / period)) < 1e-6


@pytest.mark.parametrize("policy", ["scaler", "hpa", "keda"])
def test_the_hpas_rescale_only_on_the_scenarios_sync_period(policy: str) -> None:
    prepared = prepare(ROOT / "simulations" / "homelab.yaml")
    scenario = prepared.scenario.model_copy(update={"hpa_sync_period_seconds": PERIOD})
    prepared = replace(prepared, scenario=scenario)
    result = simulate(prepared, make_autoscaler(policy, prepared))
    always_on = {i for i, name in enumerate(result.models) if not result.policies[i].on_demand}
    # The always-on models' counts move only through their HPAs (no wake-up path).
    times = [t for t, model, _ in result.spec_changes if model in always_on]
    assert len(times) >= 5
    assert all(_on_grid(t, PERIOD) for t in times), times
    assert not all(_on_grid(t, 15.0) for t in times)


def test_the_bundled_scenarios_sync_every_hpa_every_5_s() -> None:
    """What docs/deploy.md asks the cluster for (the controller-manager flag)."""
    for path in [
        ROOT / "simulations" / "homelab.yaml",
        *(ROOT / "simulations" / "bench").glob("*.yaml"),
    ]:
        assert prepare(Path(path)).scenario.hpa_sync_period_seconds == 5.0, path.name
