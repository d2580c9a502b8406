"""Whether a scenario's traffic can be served at all: each model's mean demand against what
its policy's ``replicas.max`` replicas serve at most.

A trace replayed unscaled onto a homelab (the Azure conversation trace is 5.5 requests/s, a
CPU Mistral serves about 0.09 per replica) makes every policy drop almost everything, and
the comparison says nothing. The check is deliberately coarse: the mean arrival rate over
the replay (time 0 to its last arrival) against the throughput of ``replicas.max`` replicas
with every slot busy (each request taking the slowest, all-slots-busy service time of the
scenario's profile, as the oracle plans). Bursts above the mean are what autoscaling is for
and are not flagged; placement (node memory, ``maxPerNode``) may cap lower still.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaler.simulation.scenario import PreparedScenario


@dataclass(frozen=True, slots=True)
class Overload:
    """A model whose mean demand exceeds what its largest allowed replica count serves."""

    model: str
    requests: int
    demand_rps: float  # mean arrivals per second over the replay
    capacity_rps: float  # replicas.max × slots / mean service time with every slot busy
    max_replicas: int
    slots: int
    service_s: float  # mean service time of the model's requests, every slot busy

    def __str__(self) -> str:
        return (
            f"{self.model}: demand {self.demand_rps:.3g} req/s (mean of {self.requests} "
            f"requests) exceeds what replicas.max {self.max_replicas} can serve, "
            f"{self.capacity_rps:.3g} req/s ({self.slots} slots a replica, "
            f"{self.service_s:.0f} s a request with all busy): most requests will wait or be "
            f"dropped under any policy; scale the traffic (e.g. --rate-scale "
            f"{_suggested_scale(self):.2g}) or raise replicas.max"
        )


def _suggested_scale(overload: Overload) -> float:
    """A rate scale that brings the mean demand to half the capacity (room for bursts)."""
    return 0.5 * overload.capacity_rps / overload.demand_rps


def overloads(prepared: PreparedScenario) -> tuple[Overload, ...]:
    """The models of `prepared` whose mean demand exceeds their replicas.max capacity. Pure."""
    trace = prepared.trace
    duration = trace.duration
    found: list[Overload] = []
    if duration <= 0:
        return ()
    for m, name in enumerate(prepared.models):
        mine = trace.model == m
        requests = int(np.count_nonzero(mine))
        if requests < 2:  # one request has no rate
            continue
        profile = prepared.scenario.models[name]
        service = float(
            np.mean(profile.busy_service_seconds(trace.prompt[mine], trace.output[mine]))
        )
        top = prepared.policy(name).replicas.max
        capacity = top * profile.slots / service if service > 0 else float("inf")
        demand = requests / duration
        if demand > capacity:
            found.append(Overload(name, requests, demand, capacity, top, profile.slots, service))
    return tuple(found)
