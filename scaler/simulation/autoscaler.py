"""The contract between the simulator and the policies it compares.

Every policy under comparison (scaler itself and the baselines hpa, keda, kpa, oracle) is an
``Autoscaler``: the simulation engine calls ``tick`` every ``interval`` virtual seconds with
what that policy may see, and applies the replica counts it returns to the models'
Deployments (``spec.replicas``), exactly as a controller writing the scale subresource would.
An autoscaler that embeds an HPA (scaler, hpa, keda) runs the HPA emulation itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

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
