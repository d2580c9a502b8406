"""The oracle: an autoscaler that knows every future arrival; a cost yardstick for a scenario.

No real autoscaler can see the future, so the oracle is not a candidate policy but a
yardstick: what the traffic costs if every request is served on arrival (no queue wait at
all), with every replica started a worst-case cold start ahead of need and stopped once no
request will need it before a restart could be ready.

It is not a strict cost floor: it spends the SLO's slack on nothing. A policy that lets a
request wait through a cold start within ``slo.queueWaitSeconds`` (wake on arrival, stop at
once) can cost less at the same SLO attainment, e.g. an on-demand model whose cold start is
shorter than its queue-wait threshold; and a pod that loads faster than the worst case idles
until it is needed.

How it plans, per model, on the grid of its ticks (every `interval` seconds):

1. each request is served at once on arrival for ``prompt / prefill + output / stream
   rate`` seconds, the stream rate taken with every slot of the replica busy (the slowest
   case, so the plan never runs short because of batching);
2. the replicas needed in a tick's slot are ``ceil(peak concurrent requests / slots)``;
3. at each tick it asks for the most replicas needed from now until one worst-case cold
   start (plus a tick) ahead: a replica started now is ready when it is first needed, and
   none is stopped if it would be needed again before a restart could be ready;
4. never fewer than the requests in the system right now need (if anything did queue, it
   is served before replicas go), and within the policy's ``[min, max]``.

It ignores placement (the scheduler still applies it), the HPA and the metrics pipeline:
it writes ``spec.replicas`` directly. Like scaler and Knative, its request path holds
requests at zero replicas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from scaler.simulation.autoscaler import ClusterView, IdleStretch
from scaler.simulation.scenario import PreparedScenario
from scaler.simulation.traces import IntArray


class Oracle:
    """Pre-warms exactly a cold start ahead of known arrivals; see the module docstring."""

    name = "oracle"

    def __init__(self, prepared: PreparedScenario, *, interval: float = 5.0) -> None:
        self.interval = interval
        self._plan: dict[str, IntArray] = {}
        self._slots: dict[str, int] = {}
        self._bounds: dict[str, tuple[int, int]] = {}
        trace = prepared.trace
        horizon = trace.duration + prepared.scenario.drain_seconds
        bins = math.ceil(horizon / interval) + 2
        for m, name in enumerate(prepared.models):
            profile = prepared.scenario.models[name]
            policy = prepared.policy(name)
            mine = trace.model == m
            arrival = trace.time[mine]
            service = profile.busy_service_seconds(trace.prompt[mine], trace.output[mine])
            need = _needed_per_bin(arrival, arrival + service, interval, bins, profile.slots)
            lead = math.ceil((profile.worst_cold_start_seconds + interval) / interval) + 1
            padded = np.concatenate([need, np.zeros(lead - 1, dtype=np.int64)])
            ahead = np.lib.stride_tricks.sliding_window_view(padded, lead).max(axis=1)
            self._plan[name] = ahead.astype(np.int64)
            self._slots[name] = profile.slots
            self._bounds[name] = (policy.replicas.min, policy.replicas.max)

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """The planned replicas for the tick at `view.now`, raised to cover what is in flight."""
        k = round(view.now / self.interval)
        wanted: dict[str, int] = {}
        for name, model in view.models.items():
            plan = self._plan[name]
            planned = int(plan[k]) if k < len(plan) else 0
            in_system = math.ceil(model.inflight / self._slots[name])
            low, high = self._bounds[name]
            wanted[name] = min(high, max(low, planned, in_system))
        return wanted

    def skippable_until(self, stretch: IdleStretch) -> float:
        """Until the plan asks any model for another count (nothing in flight: the plan
        alone decides); half a tick early, against the tick times' rounding."""
        view = stretch.view
        k = round(view.now / self.interval)
        until = stretch.until
        for name, model in view.models.items():
            low, high = self._bounds[name]
            ahead = np.minimum(high, np.maximum(low, self._plan[name][k + 1 :]))
            changes = np.flatnonzero(ahead != model.spec_replicas)
            if len(changes):
                until = min(until, (k + 1 + int(changes[0]) - 0.5) * self.interval)
            elif min(high, max(low, 0)) != model.spec_replicas:  # past the plan: nothing needed
                until = min(until, (k + 1 + len(ahead) - 0.5) * self.interval)
        return until

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """The oracle keeps no state."""


def _needed_per_bin(
    start: np.ndarray, end: np.ndarray, width: float, bins: int, slots: int
) -> IntArray:
    """Replicas needed in each [k*width, (k+1)*width) slot: peak concurrency over slots."""
    if len(start) == 0:
        return np.zeros(bins, dtype=np.int64)
    times = np.concatenate([end, start])
    delta = np.concatenate([-np.ones(len(end)), np.ones(len(start))]).astype(np.int64)
    order = np.lexsort((delta, times))  # at equal times, ends free a slot before starts
    times, concurrency = times[order], np.cumsum(delta[order])
    edges = np.arange(bins + 1) * width
    first = np.searchsorted(times, edges, side="left")
    concurrency = concurrency[: first[-1]]  # events after the last slot are not planned for
    carried = np.where(first[:-1] > 0, concurrency[np.maximum(first[:-1] - 1, 0)], 0)
    peak = carried.copy()
    busy = first[1:] > first[:-1]
    if busy.any():
        starts = first[:-1][busy]
        peak[busy] = np.maximum(carried[busy], np.maximum.reduceat(concurrency, starts))
    return np.asarray(np.ceil(peak / slots), dtype=np.int64)
