"""Placement planner: how many replicas of a model fit on the nodes, and where (pure).

The Kubernetes scheduler places pods; scaler only needs to know how many more would be
placed, so that it never asks for replicas that would sit Pending. A replica fits on a node
when the node's free memory (allocatable minus what placed pods take) holds the policy's
per-replica memory and the node holds fewer than ``maxPerNode`` replicas of that model.
Pending pods take no memory: they are the ones that did not fit.

New replicas are spread: each goes to the node with the fewest replicas of the model, ties
broken by the most free memory, the way ``topologySpreadConstraints`` over
``kubernetes.io/hostname`` with maxSkew 1 would place them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scaler.core.policy import ModelPolicy
from scaler.core.types import ClusterState


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """Where a model's replicas are and where new ones would go."""

    model: str
    placed: Mapping[str, int]  # node -> replicas of the model already running there
    additional: Mapping[str, int]  # node -> further replicas that would still fit there

    @property
    def capacity(self) -> int:
        """The most replicas of the model the nodes can hold, the placed ones included."""
        return sum(self.placed.values()) + sum(self.additional.values())

    def spread(self, replicas: int) -> dict[str, int]:
        """Replicas per node for `replicas` in total (capped at capacity), spread evenly."""
        assigned = dict(self.placed)
        room = dict(self.additional)
        total = sum(assigned.values())
        while total < replicas:
            candidates = [n for n, free in room.items() if free > 0]
            if not candidates:
                break
            # Fewest replicas of this model first; then the node with the most room left.
            node = min(candidates, key=lambda n: (assigned.get(n, 0), -room[n], n))
            assigned[node] = assigned.get(node, 0) + 1
            room[node] -= 1
            total += 1
        return assigned


def plan(policy: ModelPolicy, cluster: ClusterState) -> PlacementPlan:
    """The placement plan of `policy`'s model on `cluster` (pure)."""
    need = policy.placement.memory_gib
    limit = policy.placement.max_per_node
    placed = cluster.placed_by_model.get(policy.model, {})
    used = cluster.used_gib
    additional: dict[str, int] = {}
    for node in cluster.nodes:
        free = node.allocatable_gib - used.get(node.name, 0.0)
        # A tiny epsilon so that 3 x 29 GiB fits in exactly 87 GiB despite float sums.
        by_memory = int((free + 1e-9) // need) if free > 0 else 0
        by_spread = limit - placed.get(node.name, 0)
        additional[node.name] = max(0, min(by_memory, by_spread))
    return PlacementPlan(model=policy.model, placed=dict(placed), additional=additional)


def capacity(policy: ModelPolicy, cluster: ClusterState) -> int | None:
    """The most replicas of the model that fit, or None when the cluster is unknown."""
    if not cluster.nodes:
        return None
    return plan(policy, cluster).capacity
