"""The virtual cluster: nodes, model pods and a scheduler that places pods by memory.

What it models, and why:

- A Deployment per model whose ``spec.replicas`` the autoscaler writes. Scaling up creates
  pods; the scheduler places a pod on a node with enough free memory and fewer than
  ``placement.maxPerNode`` pods of the model (the shipped manifests require that spread);
  the node with the fewest pods of the model wins, then the model's first preferred node
  that fits (``preferredNodes``: preferred nodeAffinity terms of falling weight), then the
  one with the most free memory,
  as topology spread over hostnames would choose. A pod that fits nowhere stays Pending
  (no memory taken) and its waiting time is counted as unplaceable seconds; pending pods are
  retried, oldest first, whenever memory is freed or pods are created.
- A placed pod loads the model for its cold-start time (drawn from the model profile),
  then it is Ready and takes requests. With an ``uncachedColdStart`` profile, the first pod
  of a model placed on a node draws from that one instead: the node's page cache does not
  hold the file yet (it was just fetched, or this node never loaded it), so the weights are
  read from the volume. Once a pod of the model has finished loading on a node (not when it
  is merely placed there: a pod deleted mid-load counts for nothing), later pods of the
  model on that node start warm, also after a scale to zero, as long as the run lasts:
  page-cache eviction under memory pressure is not modelled (optimistic for a node full of
  other models). Pods running at t=0 mark their nodes as holding their model, and so do a
  model's ``cachedNodes`` (a pre-read put its file in their page cache before t=0). Each model
  draws its starts from its own random stream (seeded by the scenario), so how often one
  model starts does not change the start times another model draws.
- Scaling down removes pods in the ReplicaSet's order: Pending first, then starting ones
  (newest first), then Ready ones (fewest busy slots, then newest). A Ready pod with
  requests in flight leaves the endpoints at once but finishes them before it is gone and
  its memory is free (graceful termination long enough for a generation, as LLM
  Deployments configure it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from scaler.core import ClusterState, Node, Pod
from scaler.simulation.scenario import ColdStartProfile


class PodPhase(IntEnum):
    """Where a pod is in its life."""

    PENDING = 0  # created, not placed (no node has room)
    STARTING = 1  # placed, loading the model
    READY = 2  # serving
    TERMINATING = 3  # removed from endpoints, finishing its requests
    GONE = 4  # deleted; memory freed


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """What a model's pods need and how they start."""

    model: str
    memory_gib: float
    max_per_node: int
    slots: int
    cold_start: ColdStartProfile
    uncached_cold_start: ColdStartProfile | None = None  # first start on a node after a fetch
    # Node indices its pods prefer, most preferred first (nodeAffinity terms of falling weight).
    preferred: tuple[int, ...] = ()
    # Node indices whose page cache holds its file at t=0 (a pre-read ran there).
    cached: tuple[int, ...] = ()


@dataclass(slots=True, eq=False)
class VirtualPod:
    """One model replica in the virtual cluster."""

    id: int
    model: int  # index into the cluster's templates
    created: float
    phase: PodPhase = PodPhase.PENDING
    node: int = -1  # index into the nodes; -1 while pending
    placed_at: float = math.nan
    ready_at: float = math.nan  # when it becomes ready, if it is not removed first
    readied_at: float = math.nan  # when it did become ready
    ended_at: float = math.nan
    busy: int = 0
    warm: bool = False  # running before the simulation began: no cold start
    uncached: bool = False  # its start read the weights from the volume (first on its node)
    # Requests on this pod: request index -> (decode start, stream rate tokens/s, output tokens).
    running: dict[int, tuple[float, float, int]] = field(default_factory=dict)


class VirtualCluster:
    """Nodes, the pods of every model and the Deployment replica counts."""

    def __init__(
        self,
        nodes: Sequence[Node],
        templates: Sequence[PodTemplate],
        seed: int,
    ) -> None:
        self.nodes = tuple(nodes)
        self.templates = tuple(templates)
        self.free_gib = [n.allocatable_gib for n in self.nodes]
        self.pods: list[list[VirtualPod]] = [[] for _ in self.templates]  # live pods per model
        self.finished: list[VirtualPod] = []  # gone pods, for accounting
        self.spec = [0] * len(self.templates)
        self.ready = [0] * len(self.templates)  # READY pods per model (kept in sync)
        self._pending: list[VirtualPod] = []  # scheduler queue, oldest first
        # Per node: the models whose file its page cache holds (a pod of it was placed there;
        # one removed while loading counts too: it had read most of the file).
        self.cached: list[set[int]] = [set() for _ in self.nodes]
        for model, template in enumerate(self.templates):
            for node in template.cached:
                self.cached[node].add(model)
        # Each model draws its cold starts from a stream of its own (child `m` of the seed:
        # the same whatever the other models do), so two runs that scale one model
        # differently leave the other models' starts as they were. With one stream shared,
        # an extra Mixtral start shifted every later draw: deepseek-coder, decided the same,
        # missed 26 requests on azure-code instead of 18 from other start times alone.
        streams = np.random.SeedSequence(seed).spawn(len(self.templates))
        self._rngs = [np.random.default_rng(stream) for stream in streams]
        self._next_id = 0

    # --- scaling ---------------------------------------------------------------------------

    def scale(
        self, model: int, replicas: int, now: float
    ) -> tuple[list[VirtualPod], list[VirtualPod]]:
        """Set ``spec.replicas``; returns (pods placed now, Ready pods that left the endpoints).

        Placed pods need a readiness event at their ``ready_at``.
        """
        replicas = max(0, replicas)
        self.spec[model] = replicas
        live = [p for p in self.pods[model] if p.phase != PodPhase.TERMINATING]
        left: list[VirtualPod] = []
        if replicas > len(live):
            for _ in range(replicas - len(live)):
                pod = VirtualPod(self._next_id, model, now)
                self._next_id += 1
                self.pods[model].append(pod)
                self._pending.append(pod)
        elif replicas < len(live):
            for pod in sorted(live, key=_removal_rank)[: len(live) - replicas]:
                if pod.phase == PodPhase.READY:
                    left.append(pod)
                self._remove(pod, now)
        return self.schedule(now), left

    def _remove(self, pod: VirtualPod, now: float) -> None:
        if pod.phase == PodPhase.PENDING:
            self._pending.remove(pod)
            self._gone(pod, now)
        elif pod.phase == PodPhase.READY and pod.busy:
            pod.phase = PodPhase.TERMINATING
            self.ready[pod.model] -= 1
        else:
            if pod.phase == PodPhase.READY:
                self.ready[pod.model] -= 1
            self._gone(pod, now)

    def _gone(self, pod: VirtualPod, now: float) -> None:
        if pod.node >= 0:
            self.free_gib[pod.node] += self.templates[pod.model].memory_gib
        pod.phase = PodPhase.GONE
        pod.ended_at = now
        self.pods[pod.model].remove(pod)
        self.finished.append(pod)

    def drained(self, pod: VirtualPod, now: float) -> list[VirtualPod]:
        """A terminating pod finished its last request: delete it; returns pods placed now."""
        self._gone(pod, now)
        return self.schedule(now)

    def schedule(self, now: float) -> list[VirtualPod]:
        """Place pending pods that fit now, oldest first; returns the pods placed."""
        placed: list[VirtualPod] = []
        for pod in list(self._pending):
            node = self._fit(pod.model)
            if node < 0:
                continue
            template = self.templates[pod.model]
            self._pending.remove(pod)
            self.free_gib[node] -= template.memory_gib
            pod.node = node
            pod.phase = PodPhase.STARTING
            pod.placed_at = now
            profile = template.cold_start
            if template.uncached_cold_start is not None and pod.model not in self.cached[node]:
                profile, pod.uncached = template.uncached_cold_start, True
            pod.ready_at = now + profile.draw(self._rngs[pod.model])
            placed.append(pod)
        return placed

    def _fit(self, model: int) -> int:
        template = self.templates[model]
        preferred = template.preferred

        def rank(node: int) -> int:  # a preferred node's place in the list; others after
            return preferred.index(node) if node in preferred else len(preferred)

        per_node = [0] * len(self.nodes)
        for pod in self.pods[model]:
            if pod.node >= 0:
                per_node[pod.node] += 1
        best = -1
        for i in range(len(self.nodes)):
            # An epsilon so that 3 x 30 GiB fits in exactly 90 GiB despite float sums.
            if (
                self.free_gib[i] + 1e-9 < template.memory_gib
                or per_node[i] >= template.max_per_node
            ):
                continue
            if best < 0 or (per_node[i], rank(i), -self.free_gib[i]) < (
                per_node[best],
                rank(best),
                -self.free_gib[best],
            ):
                best = i
        return best

    def mark_ready(self, pod: VirtualPod) -> bool:
        """The pod finished loading; False if it was removed meanwhile."""
        if pod.phase != PodPhase.STARTING:
            return False
        pod.phase = PodPhase.READY
        pod.readied_at = pod.ready_at
        # The node's page cache holds the weights once a load has read them all: a pod
        # deleted while loading leaves the next start on its node as slow as its own.
        self.cached[pod.node].add(pod.model)
        self.ready[pod.model] += 1
        return True

    def start_ready(self, now: float) -> None:
        """Make every pod placed so far ready at once (the cluster was running before t=0)."""
        for pods in self.pods:
            for pod in pods:
                if pod.phase == PodPhase.STARTING:
                    pod.ready_at = now
                    pod.warm = True
                    pod.uncached = False
                    self.mark_ready(pod)

    # --- views -----------------------------------------------------------------------------

    def starting(self, model: int) -> int:
        """Pods of `model` placed and loading."""
        return sum(1 for p in self.pods[model] if p.phase == PodPhase.STARTING)

    def pending(self, model: int) -> int:
        """Pods of `model` waiting for a node."""
        return sum(1 for p in self.pods[model] if p.phase == PodPhase.PENDING)

    def placed(self, model: int) -> int:
        """Pods of `model` holding memory on a node (loading, ready or terminating)."""
        return sum(1 for p in self.pods[model] if p.node >= 0)

    def state(self) -> ClusterState:
        """The cluster as the placement planner sees it (pending pods without a node)."""
        pods = tuple(
            Pod(
                model=self.templates[p.model].model,
                node=self.nodes[p.node].name if p.node >= 0 else None,
                memory_gib=self.templates[p.model].memory_gib,
                terminating=p.phase == PodPhase.TERMINATING,
            )
            for pods in self.pods
            for p in pods
        )
        return ClusterState(nodes=self.nodes, pods=pods)

    def all_pods(self) -> list[VirtualPod]:
        """Every pod ever created (live and gone)."""
        return [p for pods in self.pods for p in pods] + self.finished


def _removal_rank(pod: VirtualPod) -> tuple[int, int, float]:
    """ReplicaSet deletion order: pending, then starting, then ready; least busy, newest first."""
    return (int(pod.phase), pod.busy, -pod.created)
