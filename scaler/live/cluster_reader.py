"""What the loop observes from the Kubernetes API each tick: replicas and placement.

Per tick: one GET of each target Deployment (requested and ready replicas, the pod
selector, the state annotation), one LIST of the nodes (allocatable memory) and one LIST of
each model's pods by the Deployment's own selector (which node each replica sits on). A
failed read keeps the last good answer for that piece (logged) rather than inventing one:
a Deployment never read successfully is left out of the tick, and unknown placement is an
empty ClusterState, which decide() reads as "no placement cap".

A model pod counts for the policy's ``placement.memoryGiB`` (what the planner assumes a
replica takes); node memory is the node's allocatable memory. Pods of other workloads are
not subtracted: the homelab's nodes are sized for the models, and listing every pod of the
cluster each tick would cost more than it tells (documented limitation).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog

from scaler.core import ClusterState, ModelPolicy, Node, Pod
from scaler.live.kube import DeploymentView, KubernetesApi, KubernetesError, NodeView, PodView

_log = structlog.get_logger("scaler.live.cluster")
_T = TypeVar("_T")

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes memory Quantity ("96Gi", "98765432Ki", "1e9") in bytes; ValueError if bad."""
    match = _QUANTITY.match(quantity.strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True, slots=True)
class ClusterObservation:
    """One tick's view of the cluster: each model's Deployment (when known) and placement.

    `fresh` names the models whose Deployment was read in this very tick: only those may be
    actuated (a write based on an old read could undo somebody else's change).
    """

    deployments: Mapping[str, DeploymentView]
    fresh: frozenset[str]
    cluster: ClusterState


class ClusterReader:
    """Reads the target Deployments, the nodes and the model pods; keeps the last good reads."""

    def __init__(self, *, api: KubernetesApi) -> None:
        self._api = api
        self._deployments: dict[str, DeploymentView] = {}
        self._nodes: tuple[NodeView, ...] | None = None
        self._pods: dict[str, tuple[PodView, ...]] = {}

    async def observe(self, policies: Iterable[ModelPolicy]) -> ClusterObservation:
        """Read everything for one tick (concurrently); failures fall back to the last read."""
        policies = tuple(policies)
        results = await asyncio.gather(
            *(
                _attempt(self._api.read_deployment(p.target.namespace, p.target.deployment))
                for p in policies
            )
        )
        fresh: set[str] = set()
        for policy, result in zip(policies, results, strict=True):
            if isinstance(result, KubernetesError):
                _log.warning(
                    "kubernetes_read_failed",
                    model=policy.model,
                    error=str(result),
                    status=result.status,
                    action="using the last read; no actuation for this model this tick",
                )
            else:
                self._deployments[policy.model] = result
                fresh.add(policy.model)
        await self._read_placement(policies)
        return ClusterObservation(
            deployments=dict(self._deployments),
            fresh=frozenset(fresh),
            cluster=self._cluster(policies),
        )

    async def _read_placement(self, policies: tuple[ModelPolicy, ...]) -> None:
        selectors = {
            p.model: (p.target.namespace, self._deployments[p.model].selector)
            for p in policies
            if p.model in self._deployments and self._deployments[p.model].selector
        }
        nodes, pods = await asyncio.gather(
            _attempt(self._api.list_nodes()),
            asyncio.gather(
                *(_attempt(self._api.list_pods(ns, sel)) for ns, sel in selectors.values())
            ),
        )
        if isinstance(nodes, KubernetesError):
            _log.warning("kubernetes_read_failed", what="nodes", error=str(nodes))
        else:
            self._nodes = nodes
        for model, result in zip(selectors, pods, strict=True):
            if isinstance(result, KubernetesError):
                _log.warning("kubernetes_read_failed", model=model, what="pods", error=str(result))
            else:
                self._pods[model] = result

    def _cluster(self, policies: tuple[ModelPolicy, ...]) -> ClusterState:
        if self._nodes is None:
            return ClusterState()  # placement unknown: no cap
        nodes = []
        for view in self._nodes:
            if not view.schedulable:
                continue
            try:
                nodes.append(Node(view.name, quantity_bytes(view.allocatable_memory) / 2.0**30))
            except ValueError as exc:
                _log.warning("node_memory_unreadable", node=view.name, error=str(exc))
        pods = tuple(
            Pod(
                model=p.model,
                node=pod.node,
                memory_gib=p.placement.memory_gib,
                terminating=pod.terminating,
            )
            for p in policies
            for pod in self._pods.get(p.model, ())
            if not pod.finished
        )
        return ClusterState(nodes=tuple(nodes), pods=pods)


async def _attempt(call: Awaitable[_T]) -> _T | KubernetesError:
    """The call's result, or the KubernetesError it raised (other exceptions propagate)."""
    try:
        return await call
    except KubernetesError as exc:
        return exc
