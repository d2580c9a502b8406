"""``preferredNodes``: the simulated scheduler honours a model's preferred nodeAffinity.

kube-scheduler scores a preferred nodeAffinity term (weight up to 100, the NodeAffinity
plugin weighted 2) above the free-memory spread of LeastAllocated (weighted 1), so among the
nodes a pod fits on, the first preferred one wins; a required anti-affinity (one pod of the
model per node) and memory still come first. The shipped Mixtral manifests prefer ms01-2,
then ms01-3, so that a wake-up lands where the page cache holds the weights.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from scaler.core import Node
from scaler.simulation.cluster import PodTemplate, VirtualCluster
from scaler.simulation.scenario import ColdStartProfile, check_scenario
from tests.builders import ROOT

START = ColdStartProfile(median_seconds=40)
NODES = (Node("n0", 120.0), Node("n1", 90.0), Node("n2", 90.0))  # n0 the emptiest


def _cluster(preferred: tuple[int, ...]) -> VirtualCluster:
    """Mixtral (30 GiB, one pod per node) preferring the nodes `preferred`, in that order."""
    return VirtualCluster(
        NODES, [PodTemplate("mixtral", 30.0, 1, 2, START, preferred=preferred)], 0
    )


def test_a_wake_up_goes_to_the_first_preferred_node_not_the_emptiest() -> None:
    cluster = _cluster((2, 1))
    (pod,), _ = cluster.scale(0, 1, 10.0)
    assert pod.node == 2
    cluster.scale(0, 0, 20.0)
    (again,), _ = cluster.scale(0, 1, 30.0)
    assert again.node == 2  # every wake-up: where its page cache holds the weights


def test_without_a_preference_the_emptiest_node_wins() -> None:
    (pod,), _ = _cluster(()).scale(0, 1, 10.0)
    assert pod.node == 0


def test_the_next_preferred_node_takes_the_second_replica_and_a_full_one_is_passed() -> None:
    placed, _ = _cluster((2, 1)).scale(0, 2, 10.0)
    assert sorted(p.node for p in placed) == [1, 2]  # one per node: n2, then n1
    full = _cluster((2, 1))
    full.free_gib[2] = 10.0  # n2 cannot hold 30 GiB now
    (pod,), _ = full.scale(0, 1, 10.0)
    assert pod.node == 1


def test_an_unknown_preferred_node_is_an_error_naming_the_field(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "simulations" / "homelab.yaml").read_text())
    document["models"]["mixtral-8x7b"]["preferredNodes"] = ["ms01-2", "ms01-9"]
    document["policies"] = str(ROOT / "policies")
    for item in document["traffic"]:
        if "file" in item:
            item["file"] = str(ROOT / "simulations" / item["file"])
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(document))
    scenario, errors = check_scenario(path)
    assert scenario is None
    (error,) = errors
    assert "models.mixtral-8x7b.preferredNodes: unknown node(s) ms01-9" in error.message
