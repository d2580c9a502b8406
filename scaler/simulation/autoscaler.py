"""The contract between the simulator and the policies it compares.

Every policy under comparison (scaler itself and the baselines hpa, keda, kpa, oracle) is an
``Autoscaler``: the simulation engine calls ``tick`` every ``interval`` virtual seconds with
what that policy may see, and applies the replica counts it returns to the models'
Deployments (``spec.replicas``), exactly as a controller writing the scale subresource would.
An autoscaler that embeds an HPA (scaler, hpa, keda) runs the HPA emulation itself.

An autoscaler may also be ``FastForwards``: then, while the cluster is idle, the engine asks
it how long its ticks would change nothing, skips them, and has it catch up with ``skip``,
so that a quiet week costs next to nothing. The results are the same as with every tick run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scaler.core import ClusterState, Observation


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model as a controller in the cluster would see it at one instant.

    `observation` is what Prometheus shows (scrape interval, rate windows, staleness and
    gaps applied by the engine); `inflight` is the exact number of requests in the system
    (queued + running), as a request-path component (Knative's activator/queue-proxy, the
    KEDA HTTP interceptor, scaler's activator) counts it without going through Prometheus.
    """

    model: str
    observation: Observation
    spec_replicas: int
    ready_replicas: int
    inflight: int


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything an autoscaler may look at on one tick."""

    now: float
    models: Mapping[str, ModelView]
    cluster: ClusterState


class Autoscaler(Protocol):
    """A policy under comparison, driven tick by tick by the simulation engine."""

    name: str
    interval: float  # seconds between ticks

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """The spec.replicas to write per model now; models left out keep their count."""
        ...


@dataclass(frozen=True, slots=True)
class IdleStretch:
    """What the engine promises about the ticks that follow the one that saw `view`.

    Until `until` (exclusive) nothing happens: no request arrives, is queued or runs, no pod
    is pending, starting or terminating, every spec equals the Ready pods, and Prometheus
    shows every signal at 0 on every tick, its newest sample at most `sample_age` old. So
    every such tick's view is `view` but for the time and the sample's age.
    """

    view: ClusterView
    until: float
    sample_age: float


@runtime_checkable
class FastForwards(Protocol):
    """An autoscaler whose idle ticks the engine may skip (see `IdleStretch`)."""

    def skippable_until(self, stretch: IdleStretch) -> float:
        """The time before which the engine may skip this autoscaler's ticks: each would
        return no change, and ``skip`` brings it to where they would have left it. The ticks
        from then on run as usual. ``stretch.view.now`` (or less): skip nothing."""
        ...

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """Catch up with `ticks` (ascending, within the stretch), as if each had run."""
        ...
