"""The placement planner: what fits by memory and maxPerNode, and how new replicas spread."""

from __future__ import annotations

from scaler.core import ClusterState, Node, Pod, capacity, spread
from tests.builders import homelab, make_policy


def test_capacity_counts_memory_and_max_per_node() -> None:
    """Three 96 GiB nodes hold 3 Mixtral replicas at most (maxPerNode 1), not 9."""
    policy = make_policy("mixtral-8x7b", replicas={"max": 3})
    assert capacity(policy, homelab()) == 3


def test_other_models_memory_is_taken_first() -> None:
    """Memory used by other models' placed pods is not free."""
    policy = make_policy("mixtral-8x7b")
    cluster = homelab(Pod("deepseek-coder", "ms01-1", 70.0), Pod("mistral-7b", "ms01-2", 70.0))
    assert capacity(policy, cluster) == 1  # only ms01-3 has 30 GiB free


def test_pending_pods_take_no_memory() -> None:
    """A Pending pod (no node) holds no memory on any node."""
    policy = make_policy("mixtral-8x7b")
    cluster = homelab(Pod("deepseek-coder", None, 90.0))
    assert capacity(policy, cluster) == 3


def test_own_placed_pods_count_in_capacity() -> None:
    """Running replicas of the model are part of its capacity."""
    policy = make_policy("tinyllama")  # 3.5 GiB, maxPerNode 2
    cluster = ClusterState(nodes=(Node("a", 8.0),), pods=(Pod("tinyllama", "a", 3.5),))
    assert capacity(policy, cluster) == 2


def test_exact_fit_is_not_lost_to_float_rounding() -> None:
    """Three 0.1 GiB pods fit in 0.3 GiB."""
    policy = make_policy("tinyllama", placement={"memoryGiB": 0.1, "maxPerNode": 5})
    cluster = ClusterState(nodes=(Node("a", 0.1 + 0.1 + 0.1),))
    assert capacity(policy, cluster) == 3


def test_unknown_cluster_has_no_cap() -> None:
    """Without nodes the planner says 'unknown', not zero."""
    assert capacity(make_policy(), ClusterState()) is None


def test_spread_fills_the_emptiest_node_first() -> None:
    """New replicas go where the model has the fewest, then the most room."""
    policy = make_policy("tinyllama")
    cluster = homelab(Pod("tinyllama", "ms01-1", 3.5), Pod("mistral-7b", "ms01-2", 80.0))
    assert spread(policy, cluster, 3) == {"ms01-1": 1, "ms01-3": 1, "ms01-2": 1}
    assert spread(policy, cluster, 5) == {"ms01-1": 2, "ms01-3": 2, "ms01-2": 1}


def test_spread_stops_at_capacity() -> None:
    """Asking for more than fits places only what fits."""
    policy = make_policy("mixtral-8x7b")
    assert sum(spread(policy, homelab(), 10).values()) == 3
