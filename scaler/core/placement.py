"""Placement planner: how many replicas of a model fit on the nodes, and where (pure).

The Kubernetes scheduler places pods; scaler only needs to know how many more would be
placed, so that it never asks for replicas that would sit Pending. A replica fits on a node
when the node's free memory (allocatable minus what placed pods take) holds the policy's
per-replica memory and the node holds fewer than ``maxPerNode`` replicas of that model.
Pending pods take no memory: they are the ones that did not fit.

New replicas are spread: each goes to the node with the fewest replicas of the model, ties
broken by the most free memory, the way ``topologySpreadConstraints`` over
``kubernetes.io/hostname`` with maxSkew 1 would place them.

Cost: one tick plans every model, so capacity must not walk every node per model. The
``Occupancy`` index keeps the nodes' free memory sorted: the nodes that hold ``j`` more
replicas of a model are counted by bisection, and only the few nodes where the model already
runs are visited one by one. A tick of 1,000 models stays in milliseconds
(benchmarks/decide_speed.py).
"""

from __future__ import annotations

import bisect

from scaler.core.policy import ModelPolicy
from scaler.core.types import ClusterState

# A tiny epsilon so that 3 x 29 GiB fits in exactly 87 GiB despite float sums.
_EPS = 1e-9


class Occupancy:
    """Free memory per node and where each model's replicas run: the planner's index.

    Built from a ClusterState. ``reserve`` mutates it, so decide_all() works on its own copy
    for the length of one tick; nothing else ever sees the mutation.
    """

    def __init__(self, cluster: ClusterState) -> None:
        self.free: dict[str, float] = dict(cluster.used_gib)
        for node in cluster.nodes:
            self.free[node.name] = node.allocatable_gib - self.free[node.name]
        self.placed: dict[str, dict[str, int]] = {
            model: dict(nodes) for model, nodes in cluster.placed_by_model.items()
        }
        # (free GiB, node) ascending: bisect counts, the tail gives the roomiest nodes.
        self._sorted = sorted((gib, node) for node, gib in self.free.items())

    def copy(self) -> Occupancy:
        """An independent copy (for a tick that reserves as it goes)."""
        clone = Occupancy.__new__(Occupancy)
        clone.free = dict(self.free)
        clone.placed = {model: dict(nodes) for model, nodes in self.placed.items()}
        clone._sorted = list(self._sorted)
        return clone

    def _count_at_least(self, gib: float) -> int:
        return len(self._sorted) - bisect.bisect_left(self._sorted, (gib - _EPS,))

    def capacity(self, policy: ModelPolicy) -> int:
        """The most replicas of the model the nodes can hold, the placed ones included."""
        need = policy.placement.memory_gib
        limit = policy.placement.max_per_node
        own = self.placed.get(policy.model, {})
        total = sum(own.values())
        # Nodes without the model: sum over j = 1..limit of "nodes with j * need free".
        for j in range(1, limit + 1):
            with_room = self._count_at_least(j * need)
            if with_room == 0:
                break
            total += with_room - sum(1 for n in own if self.free[n] >= j * need - _EPS)
        # Nodes with the model: what memory allows, up to the per-node limit.
        for node, count in own.items():
            by_memory = int((self.free[node] + _EPS) // need) if self.free[node] > 0 else 0
            total += max(0, min(by_memory, limit - count))
        return total

    def spread(self, policy: ModelPolicy, replicas: int) -> dict[str, int]:
        """Replicas per node for `replicas` in total (capped at what fits), spread evenly."""
        need = policy.placement.memory_gib
        limit = policy.placement.max_per_node
        assigned = dict(self.placed.get(policy.model, {}))
        missing = replicas - sum(assigned.values())
        if missing <= 0:
            return assigned
        # Only the nodes that already run the model and the `missing` roomiest others can
        # win: every other node has no replica of the model and less free memory.
        others: list[str] = []
        for gib, node in reversed(self._sorted):
            if len(others) == missing or gib < need - _EPS:
                break
            if node not in assigned:
                others.append(node)
        free = {n: self.free[n] for n in (*assigned, *others)}
        while missing > 0:
            candidates = [n for n in free if free[n] >= need - _EPS and assigned.get(n, 0) < limit]
            if not candidates:
                break
            node = min(candidates, key=lambda n: (assigned.get(n, 0), -free[n], n))
            assigned[node] = assigned.get(node, 0) + 1
            free[node] -= need
            missing -= 1
        return assigned

    def reserve(self, policy: ModelPolicy, replicas: int) -> None:
        """Place the model's replicas up to `replicas` (virtually) for later capacity queries."""
        before = self.placed.get(policy.model, {})
        after = self.spread(policy, replicas)
        for node, count in after.items():
            added = count - before.get(node, 0)
            if added <= 0:
                continue
            old = self.free[node]
            self._sorted.pop(bisect.bisect_left(self._sorted, (old, node)))
            self.free[node] = old - added * policy.placement.memory_gib
            bisect.insort(self._sorted, (self.free[node], node))
        self.placed[policy.model] = after


def capacity(policy: ModelPolicy, cluster: ClusterState) -> int | None:
    """The most replicas of the model that fit, or None when the cluster is unknown."""
    if not cluster.nodes:
        return None
    return Occupancy(cluster).capacity(policy)


def spread(policy: ModelPolicy, cluster: ClusterState, replicas: int) -> dict[str, int]:
    """Where `replicas` replicas of the model would run: placed ones kept, new ones spread."""
    return Occupancy(cluster).spread(policy, replicas)
