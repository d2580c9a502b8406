"""Each model draws its cold starts from its own stream: one model's scaling leaves another's
start times as they were, so two policies compared on a scenario differ where their
decisions do (before, an extra Mixtral start shifted every later draw of every model)."""

from __future__ import annotations

from scaler.core import Node
from scaler.simulation.cluster import PodTemplate, VirtualCluster
from scaler.simulation.scenario import ColdStartProfile

NODES = (Node("n1", 90.0), Node("n2", 90.0), Node("n3", 90.0))
TEMPLATES = (
    PodTemplate("mixtral", 30.0, 1, 2, ColdStartProfile(median_seconds=40, sigma=0.4)),
    PodTemplate("deepseek", 15.0, 1, 4, ColdStartProfile(median_seconds=15, sigma=0.3)),
)


def _deepseek_starts(mixtral_wakes: int, seed: int = 7) -> list[float]:
    """When deepseek's three pods, placed at t=100, are ready, after `mixtral_wakes` wakes."""
    cluster = VirtualCluster(NODES, TEMPLATES, seed)
    now = 0.0
    for _ in range(mixtral_wakes):
        cluster.scale(0, 1, now)
        now += 1.0
        cluster.scale(0, 0, now)
        now += 1.0
    placed, _ = cluster.scale(1, 3, 100.0)  # the same instant in every run: exact times
    return [pod.ready_at for pod in placed]


def test_another_models_starts_do_not_move_a_models_draws() -> None:
    once = _deepseek_starts(1)
    assert len(once) == 3
    assert _deepseek_starts(0) == once
    assert _deepseek_starts(5) == once


def test_the_draws_are_random_and_follow_the_seed() -> None:
    starts = _deepseek_starts(0)
    assert len(set(starts)) == 3  # lognormal draws, not the median each time
    assert _deepseek_starts(0, seed=8) != starts
    assert _deepseek_starts(0, seed=7) == starts  # and the same seed draws the same
