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
``Occupancy`` index groups the nodes by free memory, the distinct amounts sorted: the nodes
that hold ``j`` more replicas of a model are counted by bisection over the amounts, and only
the few nodes where the model already runs are visited one by one. A replica placed moves
its node from one group to another (short lists), not along one list of every node. A tick
of 1,000 models stays in milliseconds (benchmarks/decide_speed.py).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Mapping
from heapq import heapify, heappop, heappush

from scaler.core.policy import ModelPolicy
from scaler.core.types import ClusterState

# A tiny epsilon so that 3 x 29 GiB fits in exactly 87 GiB despite float sums.
_EPS = 1e-9


class Occupancy:
    """Free memory per node and where each model's replicas run: the planner's index.

    Built from a ClusterState. ``reserve`` mutates it, so decide_all() works on its own copy
    for the length of one tick; nothing else ever sees the mutation.

    The ``*_for`` methods take the model's name and placement numbers instead of its policy:
    decide() has them at hand, and reading them off the policy on every call is a cost of
    its own in a 1,000-model tick.
    """

    def __init__(self, cluster: ClusterState) -> None:
        self.free: dict[str, float] = dict(cluster.used_gib)
        for node in cluster.nodes:
            self.free[node.name] = node.allocatable_gib - self.free[node.name]
        # A model's map is replaced when it is reserved, never changed in place: the
        # cluster's own maps can be shared.
        self.placed: dict[str, Mapping[str, int]] = dict(cluster.placed_by_model)
        # Terminating pods are in `placed` (they hold their node) but are not replicas.
        self.terminating: Mapping[str, int] = cluster.terminating_by_model
        # The nodes by (free GiB, name) ascending, grouped by free GiB: the distinct amounts
        # ascending (`_levels`), how many nodes have each (`_sizes`, index for index) and
        # their names in order (`_groups`). Bisecting the amounts counts the nodes with room;
        # the last groups hold the roomiest nodes. A reservation moves a node between two
        # groups: benchmarks/decide_speed.py's 1,000-model tick makes some 1,600 moves, and in
        # one sorted list of all nodes each cost two bisections over (GiB, node) pairs and
        # two shifts of the whole list.
        self._groups: dict[float, list[str]] = {}
        for name in sorted(self.free):
            self._groups.setdefault(self.free[name], []).append(name)
        self._levels = sorted(self._groups)
        self._sizes = [len(self._groups[gib]) for gib in self._levels]

    def copy(self) -> Occupancy:
        """An independent copy (for a tick that reserves as it goes)."""
        clone = Occupancy.__new__(Occupancy)
        clone.free = dict(self.free)
        clone.placed = dict(self.placed)
        clone.terminating = self.terminating
        clone._groups = {gib: list(names) for gib, names in self._groups.items()}
        clone._levels = list(self._levels)
        clone._sizes = list(self._sizes)
        return clone

    def capacity(self, policy: ModelPolicy) -> int:
        """The most replicas of the model the nodes can hold, the placed ones included (a
        terminating pod holds its place but is not a replica: it is not counted)."""
        placement = policy.placement
        return self.capacity_for(policy.model, placement.memory_gib, placement.max_per_node)

    def capacity_for(self, model: str, need: float, limit: int) -> int:
        """``capacity`` for a model whose replica needs `need` GiB, at most `limit` a node."""
        free, levels, sizes = self.free, self._levels, self._sizes
        own = self.placed.get(model, {})
        total = sum(own.values())
        # Nodes without the model: sum over j = 1..limit of "nodes with j * need free".
        for j in range(1, limit + 1):
            fits = j * need - _EPS
            with_room = sum(sizes[bisect_left(levels, fits) :])
            if with_room == 0:
                break
            for node in own:
                if free[node] >= fits:
                    with_room -= 1
            total += with_room
        # Nodes with the model: what memory allows, up to the per-node limit.
        for node, count in own.items():
            room = limit - count
            if room <= 0:
                continue  # at its limit (every replica, with maxPerNode 1): memory aside
            by_memory = int((free[node] + _EPS) // need) if free[node] > 0 else 0
            if by_memory < room:
                room = by_memory
            if room > 0:
                total += room
        return total - self.terminating.get(model, 0)

    def spread(self, policy: ModelPolicy, replicas: int) -> dict[str, int]:
        """Replicas per node for `replicas` in total (capped at what fits), spread evenly."""
        placement = policy.placement
        return self.spread_for(policy.model, placement.memory_gib, placement.max_per_node, replicas)

    def spread_for(self, model: str, need: float, limit: int, replicas: int) -> dict[str, int]:
        """``spread`` for a model whose replica needs `need` GiB, at most `limit` a node
        (terminating pods are counted where they are, on top of the `replicas`)."""
        assigned = dict(self.placed.get(model, {}))
        missing = replicas + self.terminating.get(model, 0) - sum(assigned.values())
        if missing <= 0:
            return assigned
        # Each replica goes to the node with the fewest replicas of the model, then the most
        # free memory, then the first name: the heap's smallest key. Only the node that
        # takes a replica changes its key, so the heap pops what a scan would pick.
        fits = need - _EPS
        heap: list[tuple[int, float, str]] = []
        for node, count in assigned.items():
            gib = self.free[node]
            if gib >= fits and count < limit:
                heap.append((count, -gib, node))
        # Only the nodes that already run the model and the `missing` roomiest others can
        # win: every other node has no replica of the model and less free memory.
        others = 0
        groups, levels = self._groups, self._levels
        for level in range(len(levels) - 1, -1, -1):
            gib = levels[level]
            if others == missing or gib < fits:
                break
            for node in reversed(groups[gib]):
                if others == missing:
                    break
                if node not in assigned:
                    heap.append((0, -gib, node))
                    others += 1
        heapify(heap)
        while missing > 0 and heap:
            count, minus_gib, node = heappop(heap)
            count += 1
            assigned[node] = count
            missing -= 1
            gib = -minus_gib - need
            if count < limit and gib >= fits:
                heappush(heap, (count, -gib, node))
        return assigned

    def reserve(self, policy: ModelPolicy, replicas: int) -> None:
        """Place the model's replicas up to `replicas` (virtually) for later capacity queries."""
        placement = policy.placement
        self.reserve_for(policy.model, placement.memory_gib, placement.max_per_node, replicas)

    def reserve_for(self, model: str, need: float, limit: int, replicas: int) -> None:
        """``reserve`` for a model whose replica needs `need` GiB, at most `limit` a node."""
        before = self.placed.get(model, {})
        after = self.spread_for(model, need, limit, replicas)
        for node, count in after.items():
            added = count - before.get(node, 0)
            if added > 0:
                old = self.free[node]
                new = self.free[node] = old - added * need
                self._move(node, old, new)
        self.placed[model] = after

    def _move(self, node: str, old: float, new: float) -> None:
        """Move `node` from the group of `old` free GiB to the group of `new` (less)."""
        groups, levels, sizes = self._groups, self._levels, self._sizes
        names = groups[old]
        level = bisect_left(levels, old)
        if len(names) == 1:
            del groups[old], levels[level], sizes[level]
        else:
            del names[bisect_left(names, node)]
            sizes[level] -= 1
        # Less free memory than before: the new amount sorts before the old one.
        level = bisect_left(levels, new, 0, level)
        joined = groups.get(new)
        if joined is None:
            groups[new] = [node]
            levels.insert(level, new)
            sizes.insert(level, 1)
        else:
            insort(joined, node)
            sizes[level] += 1


def capacity(policy: ModelPolicy, cluster: ClusterState) -> int | None:
    """The most replicas of the model that fit, or None when the cluster is unknown."""
    if not cluster.nodes:
        return None
    return Occupancy(cluster).capacity(policy)


def spread(policy: ModelPolicy, cluster: ClusterState, replicas: int) -> dict[str, int]:
    """Where `replicas` replicas of the model would run: placed ones kept, new ones spread."""
    return Occupancy(cluster).spread(policy, replicas)
