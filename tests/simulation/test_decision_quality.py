"""Quality guards on scaler's decisions: seeded simulations that fail when they regress.

A small suite of shapes (the bundled homelab scenario, sparse Mixtral sessions, a
compressed diurnal day; all seeded, so every run gives the same figures) runs scaler, the
baselines and the oracle through the simulator. The thresholds sit just above what the
decisions reach today (figures in the comments; `scaler bench` prints them), so a change
that makes scaler pay more or serve worse fails here. The issue's aim (cost at most 1.10x
the oracle at the oracle's SLO) is not reached on every shape: a non-clairvoyant policy
buys headroom where the oracle pre-warms; see README "Results".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.simulation.bench import BenchResult, run_bench
from tests.builders import ROOT

SHAPES = (
    ROOT / "simulations" / "homelab.yaml",
    ROOT / "simulations" / "bench" / "sparse-sessions.yaml",
    ROOT / "simulations" / "bench" / "diurnal-a.yaml",
)
PEERS = ("hpa", "hpa-warm", "keda", "keda-http", "kpa")

COST_LIMIT = 1.16  # today: homelab 1.11, sparse-sessions 0.97, diurnal-a 1.05
TOTAL_SLO_MARGIN = 0.01  # today: 0.991 / 0.999 / 0.994 against the oracle's 1.000
# Today's worst: homelab deepseek-coder -0.031, seven of its 229 requests waiting longer than
# 15 s in bursts of code completions (sparse-sessions' Mixtral -0.028: one wake-up of 16 drew
# a 96 s start from the page cache). (Each model draws its cold starts from its own stream
# since 2026-12-03; before, an extra Mixtral start moved every other model's start times, and
# the worst here was Mixtral's -0.087: two wake-ups reading the weights from the volume.)
MODEL_SLO_MARGIN = 0.05
PEER_DISCOUNT = 0.97  # today: kpa on sparse-sessions reaches scaler's SLO at 1.025x its cost


@pytest.fixture(scope="module")
def bench() -> BenchResult:
    return run_bench(list(SHAPES), ["scaler", *PEERS])


def test_the_suite_is_deterministic(bench: BenchResult) -> None:
    """A second run of one shape gives the same figures (seeded traffic and cold starts)."""
    again = run_bench([SHAPES[1]], ["scaler"], workers=1)
    first = next(s for s in bench.shapes if s.path == SHAPES[1]).score("scaler")
    second = again.shapes[0].score("scaler")
    assert first is not None
    assert second is not None
    assert (first.gib_hours, first.slo_attainment) == (second.gib_hours, second.slo_attainment)


@pytest.mark.parametrize("shape", [Path(p).stem for p in SHAPES])
def test_scaler_costs_close_to_the_oracle(bench: BenchResult, shape: str) -> None:
    """Total GiB-hours at most COST_LIMIT times the oracle's."""
    score = next(s for s in bench.shapes if s.path.stem == shape).score("scaler")
    assert score is not None
    assert score.cost_ratio <= COST_LIMIT


@pytest.mark.parametrize("shape", [Path(p).stem for p in SHAPES])
def test_scaler_serves_close_to_the_oracles_slo(bench: BenchResult, shape: str) -> None:
    """SLO attainment within TOTAL_SLO_MARGIN of the oracle's overall, and within
    MODEL_SLO_MARGIN for every model."""
    result = next(s for s in bench.shapes if s.path.stem == shape)
    scaler, oracle = result.score("scaler"), result.score("oracle")
    assert scaler is not None
    assert oracle is not None
    assert scaler.slo_attainment >= oracle.slo_attainment - TOTAL_SLO_MARGIN
    assert scaler.worst_slo_gap >= -MODEL_SLO_MARGIN


@pytest.mark.parametrize("peer", PEERS)
def test_no_peer_reaching_scalers_slo_is_clearly_cheaper(bench: BenchResult, peer: str) -> None:
    """On every shape, a baseline that serves every model at least as well as scaler costs
    at least PEER_DISCOUNT times what scaler costs."""
    for shape in bench.shapes:
        scaler, other = shape.score("scaler"), shape.score(peer)
        assert scaler is not None
        assert other is not None
        as_good = all(
            other.models[m].slo_attainment >= scaler.models[m].slo_attainment for m in scaler.models
        )
        if as_good:
            assert other.gib_hours >= PEER_DISCOUNT * scaler.gib_hours, shape.shape
