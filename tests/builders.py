"""Test builders with defaults, and a tick-by-tick driver for decide() on virtual time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaler.core import (
    ClusterState,
    Decision,
    ModelPolicy,
    ModelState,
    Node,
    Observation,
    Pod,
    Signal,
    decide,
)

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def policy_document(base: str = "mistral-7b", **changes: Any) -> dict[str, Any]:
    """A shipped policy's YAML document, with camelCase `changes` deep-merged (None deletes)."""
    document = yaml.safe_load((POLICIES / f"{base}.yaml").read_text())
    assert isinstance(document, dict)
    return _merge(document, changes)


def make_policy(base: str = "mistral-7b", **changes: Any) -> ModelPolicy:
    """A validated policy: a shipped one with camelCase `changes` deep-merged."""
    return ModelPolicy.model_validate(policy_document(base, **changes))


def make_target_policy(base: str = "mistral-7b", **changes: Any) -> ModelPolicy:
    """A shipped policy without its ``sizing`` section: decided by the per-signal targets
    alone (the fallback path of a sized policy), for tests that pin those steps."""
    return make_policy(base, sizing=None, **changes)


def make_observation(
    model: str = "mistral-7b",
    *,
    queue: float | None = 0.0,
    tokens: float | None = 0.0,
    inflight: float | None = 0.0,
    rate: float | None = 0.0,
    current: int = 1,
    ready: int | None = None,
    sample_time: float | None = None,
) -> Observation:
    """An observation; a signal passed as None is missing. `ready` defaults to `current`.

    `sample_time` None means the source gave no timestamp: staleness is not judged.
    """
    values = {
        Signal.QUEUE_DEPTH: queue,
        Signal.TOKENS_PER_SECOND: tokens,
        Signal.INFLIGHT_REQUESTS: inflight,
        Signal.REQUEST_RATE: rate,
    }
    return Observation(
        model=model,
        signals={s: v for s, v in values.items() if v is not None},
        sample_time=sample_time,
        current_replicas=current,
        ready_replicas=current if ready is None else ready,
    )


def homelab(*pods: Pod, memory_gib: float = 96.0) -> ClusterState:
    """The three MS-01 nodes (96 GiB each unless told), with `pods` on them."""
    nodes = tuple(Node(f"ms01-{i}", memory_gib) for i in (1, 2, 3))
    return ClusterState(nodes=nodes, pods=pods)


Load = Callable[[float], Mapping[Signal, float]]
"""Signal values at a virtual time, for the driver."""


@dataclass
class Driver:
    """Steps virtual time through decide() for one model, with a toy cluster.

    Desired replicas are applied at once (as an HPA with a lead-following behavior would);
    each new replica becomes ready `cold_start` seconds after it was requested. Set
    `metrics_down` to a predicate to simulate a Prometheus outage.
    """

    policy: ModelPolicy
    load: Load
    current: int = 1
    cold_start: float | None = None  # defaults to the policy's
    interval: float = 5.0
    cluster: ClusterState = field(default_factory=ClusterState)
    metrics_down: Callable[[float], bool] = lambda _t: False
    state: ModelState = field(default_factory=ModelState)
    ready_at: list[float] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.ready_at = [-1.0] * self.current

    def ready(self) -> int:
        """Replicas ready at the current virtual time."""
        return sum(1 for t in self.ready_at if t <= self.now)

    def step(self) -> Decision:
        """One tick: observe, decide, apply; then advance the clock by `interval`."""
        down = self.metrics_down(self.now)
        observation = Observation(
            model=self.policy.model,
            signals={} if down else dict(self.load(self.now)),
            sample_time=None if down else self.now,
            current_replicas=self.current,
            ready_replicas=self.ready(),
        )
        decision, self.state = decide(observation, self.policy, self.state, self.cluster, self.now)
        self.decisions.append(decision)
        delay = self.policy.cold_start.seconds if self.cold_start is None else self.cold_start
        desired = decision.desired_replicas
        if desired > self.current:
            self.ready_at += [self.now + delay] * (desired - self.current)
        elif desired < self.current:
            # The newest (least ready) replicas go first, as a ReplicaSet scale-down would.
            self.ready_at = sorted(self.ready_at)[:desired]
        self.current = desired
        self.now += self.interval
        return decision

    def run(self, until: float) -> list[Decision]:
        """Step until virtual time `until`; the decisions made on the way."""
        made: list[Decision] = []
        while self.now < until:
            made.append(self.step())
        return made


def signals(
    queue: float = 0.0, tokens: float = 0.0, inflight: float = 0.0, rate: float = 0.0
) -> dict[Signal, float]:
    """A signal mapping with every signal present."""
    return {
        Signal.QUEUE_DEPTH: queue,
        Signal.TOKENS_PER_SECOND: tokens,
        Signal.INFLIGHT_REQUESTS: inflight,
        Signal.REQUEST_RATE: rate,
    }
