"""The placement planner: what fits by memory and maxPerNode, and how new replicas spread."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import ClusterState, Node, Occupancy, Pod, capacity, spread
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


def test_a_terminating_pod_holds_its_node_but_is_not_a_replica() -> None:
    """deepseek-coder (15 GiB, one a node) on three nodes, one of its pods terminating on
    ms01-3 (finishing its requests): two replicas fit, not three, and a third replica would
    wait for ms01-3 to free (the bundled scenario's 59 pod-seconds Pending). Another model
    sees the terminating pod's memory as taken."""
    policy = make_policy("deepseek-coder")
    pods = (
        Pod("deepseek-coder", "ms01-1", 15.0),
        Pod("deepseek-coder", "ms01-2", 15.0),
        Pod("deepseek-coder", "ms01-3", 15.0, terminating=True),
    )
    cluster = homelab(*pods)
    assert capacity(policy, cluster) == 2
    assert capacity(policy, homelab(*pods[:2])) == 3
    assert spread(policy, cluster, 2) == {"ms01-1": 1, "ms01-2": 1, "ms01-3": 1}
    big = make_policy("mixtral-8x7b", placement={"memoryGiB": 90.0})
    assert capacity(big, cluster) == 0  # 96 - 15 on every node, the terminating one's too


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


class _PlainPlanner:
    """The planner without an index: every query walks every node (the reference).

    The rules are Occupancy's, written the plain way: capacity visits each node, and each
    new replica goes to the best of the placed nodes and the `missing` roomiest others
    (sorted afresh per call) by a scan.
    """

    def __init__(self, cluster: ClusterState) -> None:
        used = {node.name: 0.0 for node in cluster.nodes}
        for pod in cluster.pods:
            if pod.node in used:
                used[pod.node] += pod.memory_gib
        self.free = {node.name: node.allocatable_gib - used[node.name] for node in cluster.nodes}
        self.placed = {m: dict(nodes) for m, nodes in cluster.placed_by_model.items()}

    def capacity(self, model: str, need: float, limit: int) -> int:
        own = self.placed.get(model, {})
        total = sum(own.values())
        for node, gib in self.free.items():
            if node not in own:
                total += sum(1 for j in range(1, limit + 1) if gib >= j * need - 1e-9)
        for node, count in own.items():
            gib = self.free[node]
            by_memory = int((gib + 1e-9) // need) if gib > 0 else 0
            total += max(0, min(by_memory, limit - count))
        return total

    def spread(self, model: str, need: float, limit: int, replicas: int) -> dict[str, int]:
        assigned = dict(self.placed.get(model, {}))
        missing = replicas - sum(assigned.values())
        if missing <= 0:
            return assigned
        roomiest = sorted(((gib, node) for node, gib in self.free.items()), reverse=True)
        others = [n for gib, n in roomiest if gib >= need - 1e-9 and n not in assigned]
        free = {n: self.free[n] for n in (*assigned, *others[:missing])}
        while missing > 0:
            candidates = [n for n in free if free[n] >= need - 1e-9 and assigned.get(n, 0) < limit]
            if not candidates:
                break
            node = min(candidates, key=lambda n: (assigned.get(n, 0), -free[n], n))
            assigned[node] = assigned.get(node, 0) + 1
            free[node] -= need
            missing -= 1
        return assigned

    def reserve(self, model: str, need: float, limit: int, replicas: int) -> None:
        before = self.placed.get(model, {})
        after = self.spread(model, need, limit, replicas)
        for node, count in after.items():
            self.free[node] -= max(0, count - before.get(node, 0)) * need
        self.placed[model] = after


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.lists(st.sampled_from([8.0, 30.0, 64.0, 96.0, 0.3]), min_size=1, max_size=7),
    pods=st.lists(
        st.tuples(st.integers(0, 3), st.integers(-1, 6), st.sampled_from([3.5, 11.0, 30.0])),
        max_size=8,
    ),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9)), min_size=1, max_size=12),
)
def test_occupancy_answers_as_the_plain_planner(
    nodes: list[float], pods: list[tuple[int, int, float]], steps: list[tuple[int, int]]
) -> None:
    """Capacity, spread (and its order) and reserve agree with the plain per-node walk,
    ties in free memory included, over any sequence of reservations."""
    models = [("a", 3.5, 2), ("b", 11.0, 1), ("c", 30.0, 1), ("d", 0.1, 3)]
    node_objs = tuple(Node(f"n{i}", gib) for i, gib in enumerate(nodes))
    cluster = ClusterState(
        nodes=node_objs,
        pods=tuple(
            Pod(models[m][0], f"n{n}" if 0 <= n < len(nodes) else None, gib) for m, n, gib in pods
        ),
    )
    index, plain = Occupancy(cluster), _PlainPlanner(cluster)
    for m, replicas in steps:
        model, need, limit = models[m]
        assert index.capacity_for(model, need, limit) == plain.capacity(model, need, limit)
        assert list(index.spread_for(model, need, limit, replicas).items()) == list(
            plain.spread(model, need, limit, replicas).items()
        )
        index.reserve_for(model, need, limit, replicas)
        plain.reserve(model, need, limit, replicas)
        assert index.free == plain.free
        assert index.placed == plain.placed
