"""The discrete-event simulation: requests through the virtual cluster under one autoscaler.

Time is virtual (float seconds from the trace's start). The loop takes, in order of time,
the next of: a pod event (a request finishing, a pod becoming ready) from a heap, the next
arrival from the trace's sorted arrays, the next Prometheus scrape, and the next tick of
the autoscaler under comparison. At equal times pod events go first, then arrivals, then
the scrape, then the tick, so a tick sees the state after everything that happened at its
instant.

Requests (per model, one FIFO queue):

- an arrival takes a free slot on the least busy Ready pod, or waits in the queue;
- a slot that frees takes the head of the queue; a pod that becomes Ready fills its slots;
- service time follows the model profile (see `ModelProfile`): prefill at the prompt rate,
  then decode at a per-stream rate fixed when the request takes its slot;
- at zero Ready pods, policies with a request-holding component in the path (``scaler``'s
  activator, Knative's activator for ``kpa``, and the ``oracle``) queue the request;
  ``hpa`` and ``keda`` (Prometheus scaler, no HTTP add-on) have nothing to hold it, so the
  ingress answers 503 and the request is dropped; when their last Ready pod goes away, the
  requests waiting for it are dropped too (the connections are closed);
- the run lasts until ``drainSeconds`` after the last arrival; a request still waiting or
  running then counts as dropped (its client gave up).

Every request ends exactly once as served or dropped (`SimulationResult.status`); the
engine raises `ConservationError` if it would be finished twice or left unfinished.

What the autoscaler sees is what Prometheus would serve (`MetricsSpec`): samples scraped
every ``scrapeIntervalSeconds``; gauges (queue depth, in-flight) at the last scrape; rates
(requests/s, generated tokens/s) over ``rateWindowSeconds`` from the counter samples in the
window (at least two, else the signal is missing); nothing at all during a metrics outage
(no scrapes happen then, so rate windows right after it are short of samples too). The
exact in-system count (`ModelView.inflight`) is the request path's own count.
"""

from __future__ import annotations

import gc
import heapq
import math
import time as wallclock
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from scaler.core import Decision, ModelPolicy, Node, Observation, Signal
from scaler.simulation.autoscaler import (
    Autoscaler,
    ClusterView,
    FastForwards,
    IdleStretch,
    ModelView,
)
from scaler.simulation.cluster import PodPhase, PodTemplate, VirtualCluster, VirtualPod
from scaler.simulation.scenario import PreparedScenario, Scenario
from scaler.simulation.traces import FloatArray, IntArray

HOLDING_POLICIES = frozenset({"scaler", "kpa", "keda-http", "oracle"})
"""Policies whose request path holds requests while a model has no Ready replica."""

PENDING, SERVED, DROPPED = 0, 1, 2
"""Values of `SimulationResult.status`."""

_COMPLETE, _READY = 0, 1  # heap event kinds


class ConservationError(RuntimeError):
    """A request would be finished twice, or was left unfinished: a bug in the engine."""


@runtime_checkable
class RecordsDecisions(Protocol):
    """An autoscaler that keeps the core's decisions (scaler does), for reports and export."""

    decisions: list[Decision]


@runtime_checkable
class WakesOnHold(Protocol):
    """An autoscaler whose request path wakes a model the moment it holds a request for it
    (scaler's activator with ``--scale-on-wake``, as the shipped manifests run it)."""

    def wake(self, model: str, now: float, spec_replicas: int) -> int | None:
        """The spec.replicas to write now that a request is held for `model`, or None."""
        ...


@dataclass(frozen=True)
class ModelSeries:
    """One model's state at every scrape (arrays aligned with `SimulationResult.scrape_times`)."""

    spec: IntArray
    ready: IntArray
    starting: IntArray
    pending: IntArray
    queue: IntArray
    running: IntArray
    arrivals: IntArray  # counter
    tokens: FloatArray  # counter of generated tokens
    signals: Mapping[Signal, FloatArray]  # what the autoscaler last saw (NaN = missing)
    data_age: FloatArray  # at the last tick, its time - the newest sample seen (NaN: none)


@dataclass(frozen=True)
class PodRecord:
    """One pod's life: created, placed, ready and ended times (NaN: did not happen).

    `warm` pods were running before the simulation began: they cost, but loaded nothing.
    `id` is the pod's number in the run (`SimulationResult.pod` refers to it).
    """

    model: int
    created: float
    placed: float
    ready: float
    ended: float
    warm: bool
    id: int = -1


@dataclass(frozen=True)
class SimulationResult:
    """Everything a run produced; reports and plots are computed from it."""

    scenario: str
    policy: str
    models: tuple[str, ...]
    policies: tuple[ModelPolicy, ...]
    memory_gib: tuple[float, ...]
    duration: float
    wall_seconds: float
    arrival: FloatArray
    model: IntArray
    prompt: IntArray  # prompt tokens of each request (the trace's)
    output: IntArray  # output tokens of each request
    start: FloatArray  # NaN if never started
    end: FloatArray  # NaN if never completed
    ttft: FloatArray  # NaN if not served
    prefilled: FloatArray  # end of the prefill (start of decode); NaN if never started
    pod: IntArray  # id of the pod that served it (`PodRecord.id`); -1 if never started
    status: IntArray  # SERVED or DROPPED
    held: npt.NDArray[np.bool_]  # arrived while the model had no Ready pod, and was held
    holds_requests: bool  # whether the request path held requests at zero Ready pods
    pods: tuple[PodRecord, ...]
    spec_changes: tuple[tuple[float, int, int], ...]  # (time, model, new spec.replicas)
    initial_replicas: tuple[int, ...]  # spec.replicas per model at t=0
    scrape_times: FloatArray
    tick_times: FloatArray  # every tick of the autoscaler
    series: tuple[ModelSeries, ...]
    decisions: tuple[Decision, ...]
    nodes: tuple[Node, ...] = ()
    decode_rates: tuple[float, ...] = ()  # per model: one stream's decode tokens/s


@dataclass(frozen=True, slots=True)
class ModelRuntime:
    """A model's service figures, as the engine's hot path reads them."""

    slots: int
    prefill: float
    decode: float
    slowdown: float


Progress = Callable[[float, float], None]
"""Called now and then with (virtual now, virtual end)."""


class Simulation:
    """One run of a prepared scenario under one autoscaler."""

    def __init__(
        self,
        prepared: PreparedScenario,
        autoscaler: Autoscaler,
        *,
        holds_requests: bool | None = None,
        progress: Progress | None = None,
        fast_forward: bool = True,
    ) -> None:
        self.prepared = prepared
        self.autoscaler = autoscaler
        self.fast_forward = fast_forward
        self.holds = (
            autoscaler.name in HOLDING_POLICIES if holds_requests is None else holds_requests
        )
        self.progress = progress
        scenario = prepared.scenario
        self.names = prepared.models
        templates = []
        runtimes = []
        for name in self.names:
            profile = scenario.models[name]
            policy = prepared.policy(name)
            templates.append(
                PodTemplate(
                    name,
                    prepared.memory_gib(name),
                    policy.placement.max_per_node,
                    profile.slots,
                    profile.cold_start,
                    profile.uncached_cold_start,
                    _node_indices(scenario, profile.preferred_nodes),
                    _node_indices(scenario, profile.cached_nodes),
                )
            )
            runtimes.append(
                ModelRuntime(
                    profile.slots,
                    profile.prefill_tokens_per_second,
                    profile.decode_tokens_per_second,
                    profile.decode_slowdown_per_stream,
                )
            )
        self.runtimes = tuple(runtimes)
        self.cluster = VirtualCluster(scenario.cluster_nodes(), templates, scenario.seed)

    def run(self) -> SimulationResult:
        """Simulate to the end; the result holds every request's fate and the series."""
        # A run makes no reference cycles (a full collection after a run of each policy found
        # none), so the collector's full passes only walk the results as they grow, again and
        # again: without them a 20 h run takes 12 % less. Young passes still run.
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], 2**31 - 1)
        try:
            return self._run()
        finally:
            gc.set_threshold(*thresholds)

    def _run(self) -> SimulationResult:
        started = wallclock.perf_counter()
        prepared, scenario = self.prepared, self.prepared.scenario
        trace = prepared.trace
        n_models = len(self.names)
        arrival_list: list[float] = trace.time.tolist()
        model_list: list[int] = trace.model.tolist()
        prompt_list: list[int] = trace.prompt.tolist()
        output_list: list[int] = trace.output.tolist()
        n = len(arrival_list)
        start = [math.nan] * n
        end = [math.nan] * n
        ttft = [math.nan] * n
        prefilled = [math.nan] * n
        served_by = [-1] * n
        status = [PENDING] * n
        held = [False] * n
        last_arrival = arrival_list[-1] if n else 0.0
        horizon = max(last_arrival, 0.0) + scenario.drain_seconds

        cluster = self.cluster
        runtimes = self.runtimes
        queues: list[deque[int]] = [deque() for _ in range(n_models)]
        running = [0] * n_models
        free_slots = [0] * n_models  # free slots on Ready pods
        arrivals_total = [0] * n_models
        tokens_done = [0.0] * n_models
        heap: list[tuple[float, int, int, VirtualPod, int]] = []
        seq = 0
        holds = self.holds

        def push(t: float, kind: int, pod: VirtualPod, request: int) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, seq, kind, pod, request))

        def finish(request: int, outcome: int) -> None:
            if status[request] != PENDING:
                raise ConservationError(f"request {request} finished twice")
            status[request] = outcome

        def begin(pod: VirtualPod, request: int, now: float) -> None:
            m = pod.model
            rt = runtimes[m]
            pod.busy += 1
            running[m] += 1
            free_slots[m] -= 1
            prefill = prompt_list[request] / rt.prefill
            rate = rt.decode / (1.0 + rt.slowdown * (pod.busy - 1))
            start[request] = now
            prefilled[request] = now + prefill
            served_by[request] = pod.id
            ttft[request] = now - arrival_list[request] + prefill + 1.0 / rate
            pod.running[request] = (now + prefill, rate, output_list[request])
            push(now + prefill + output_list[request] / rate, _COMPLETE, pod, request)

        def best_pod(m: int) -> VirtualPod:
            chosen: VirtualPod | None = None
            for pod in cluster.pods[m]:
                if (
                    pod.phase == PodPhase.READY
                    and pod.busy < runtimes[m].slots
                    and (chosen is None or pod.busy < chosen.busy)
                ):
                    chosen = pod
            assert chosen is not None, "free_slots out of sync"
            return chosen

        def fill(pod: VirtualPod, now: float) -> None:
            queue = queues[pod.model]
            slots = runtimes[pod.model].slots
            while queue and pod.busy < slots:
                begin(pod, queue.popleft(), now)

        def drop_queue(m: int) -> None:
            queue = queues[m]
            while queue:
                finish(queue.popleft(), DROPPED)

        def placed(pods: list[VirtualPod]) -> None:
            for pod in pods:
                push(pod.ready_at, _READY, pod, -1)

        def scale(m: int, replicas: int, now: float) -> None:
            new_pods, left = cluster.scale(m, replicas, now)
            placed(new_pods)
            # The free slots of pods that left the endpoints are gone with them.
            free_slots[m] -= sum(runtimes[m].slots - pod.busy for pod in left)
            if left and not holds and cluster.ready[m] == 0:
                drop_queue(m)

        # The cluster was running before t=0: every model at its minimum (or the count the
        # autoscaler's set-up keeps, e.g. hpa-warm's one Mixtral replica), warm.
        policies = prepared.policies
        initial = getattr(self.autoscaler, "initial_replicas", {})
        for m, policy in enumerate(policies):
            cluster.scale(m, initial.get(policy.model, policy.replicas.min), 0.0)
        cluster.start_ready(0.0)
        for m in range(n_models):
            free_slots[m] = cluster.ready[m] * runtimes[m].slots
        spec_changes: list[tuple[float, int, int]] = []

        metrics = scenario.metrics
        scrape_every = metrics.scrape_interval_seconds
        window = metrics.rate_window_seconds
        outages = [(o.start_seconds, o.end_seconds) for o in metrics.metrics_outage]
        tick_every = self.autoscaler.interval
        next_scrape = 0.0
        next_tick = 0.0
        next_progress = 0.0
        # Samples Prometheus holds: per model, (time, queue, inflight, arrivals, tokens).
        samples: list[deque[tuple[float, int, int, int, float]]] = [
            deque() for _ in range(n_models)
        ]
        scrape_times: list[float] = []
        rows: list[list[tuple[int, int, int, int, int, int, int, float]]] = [
            [] for _ in range(n_models)
        ]
        seen: list[dict[Signal, list[float]]] = [{s: [] for s in Signal} for _ in range(n_models)]
        last_seen: list[Mapping[Signal, float]] = [{} for _ in range(n_models)]
        ages: list[list[float]] = [[] for _ in range(n_models)]
        last_age = [math.nan] * n_models
        tick_times: list[float] = []

        def down(t: float) -> bool:
            return any(a <= t < b for a, b in outages)

        def observe(m: int, now: float) -> Observation:
            name = self.names[m]
            window_samples = samples[m]
            if down(now) or not window_samples:
                return Observation(name, {}, None, cluster.spec[m], cluster.ready[m])
            t_last, queue, inflight, _, _ = window_samples[-1]
            signals: dict[Signal, float] = {
                Signal.QUEUE_DEPTH: float(queue),
                Signal.INFLIGHT_REQUESTS: float(inflight),
            }
            in_window = [s for s in window_samples if s[0] > now - window]
            if len(in_window) >= 2:
                first, last = in_window[0], in_window[-1]
                span = last[0] - first[0]
                signals[Signal.REQUEST_RATE] = (last[3] - first[3]) / span
                signals[Signal.TOKENS_PER_SECOND] = (last[4] - first[4]) / span
            return Observation(name, signals, t_last, cluster.spec[m], cluster.ready[m])

        def scrape(now: float) -> None:
            scrape_times.append(now)
            is_down = down(now)
            for m in range(n_models):
                tokens = tokens_done[m]
                for pod in cluster.pods[m]:
                    for decode_start, rate, output in pod.running.values():
                        if now > decode_start:
                            tokens += min(output, (now - decode_start) * rate)
                waiting = len(queues[m])
                rows[m].append(
                    (
                        cluster.spec[m],
                        cluster.ready[m],
                        cluster.starting(m),
                        cluster.pending(m),
                        waiting,
                        running[m],
                        arrivals_total[m],
                        tokens,
                    )
                )
                if not is_down:
                    window_samples = samples[m]
                    window_samples.append(
                        (now, waiting, waiting + running[m], arrivals_total[m], tokens)
                    )
                    while len(window_samples) > 2 and window_samples[1][0] <= now - window:
                        window_samples.popleft()
                for signal in Signal:
                    seen[m][signal].append(last_seen[m].get(signal, math.nan))
                ages[m].append(last_age[m])

        def tick(now: float) -> ClusterView | None:
            """One tick of the autoscaler; its view, or None if it changed a spec."""
            tick_times.append(now)
            views = {}
            for m, name in enumerate(self.names):
                observation = observe(m, now)
                last_seen[m] = observation.signals
                sample_time = observation.sample_time
                last_age[m] = math.nan if sample_time is None else now - sample_time
                views[name] = ModelView(
                    name,
                    observation,
                    cluster.spec[m],
                    cluster.ready[m],
                    len(queues[m]) + running[m],
                )
            view = ClusterView(now, views, cluster.state())
            wanted = self.autoscaler.tick(view)
            changed = False
            for name, replicas in wanted.items():
                m = self.names.index(name)
                if replicas != cluster.spec[m]:
                    spec_changes.append((now, m, replicas))
                    scale(m, replicas, now)
                    changed = True
            return None if changed else view

        # Fast-forward (see FastForwards): an autoscaler that can say so has its ticks
        # skipped while nothing happens. Every skipped tick's rates must be read from two
        # samples at least, which a window of two scrape intervals guarantees.
        skipper = (
            self.autoscaler
            if self.fast_forward
            and isinstance(self.autoscaler, FastForwards)
            and window >= 2 * scrape_every
            else None
        )
        outage_starts = sorted(a for a, _ in outages)

        def idle_until(now: float) -> float:
            """Until when (exclusive) nothing happens to the cluster and its metrics stay at
            rest (see IdleStretch); `now` if something is going on now."""
            if heap or down(now):
                return now
            for m in range(n_models):
                ready = cluster.ready[m]
                if queues[m] or running[m] or cluster.spec[m] != ready:
                    return now
                if len(cluster.pods[m]) != ready:  # pending, starting or terminating pods
                    return now
                seen_now = last_seen[m]
                if len(seen_now) != len(Signal) or any(v != 0.0 for v in seen_now.values()):
                    return now
                # The next scrapes must read what the last one did: a request that came and
                # went since would still move the counters, and the rates after it.
                _, waiting, inflight, arrived, tokens = samples[m][-1]
                if waiting or inflight or (arrived, tokens) != (arrivals_total[m], tokens_done[m]):
                    return now
            until = min(arrival_list[i] if i < n else inf, horizon)
            return min([until, *(a for a in outage_starts if a > now)])

        def fast_forward(stretch: IdleStretch, resume: float) -> None:
            """Scrape and record the ticks before `resume` as the loop would, without asking
            the autoscaler; then let it catch up."""
            nonlocal next_scrape, next_tick
            assert skipper is not None
            skipped: list[float] = []
            # What scrape() records of an idle cluster, the same at every scrape but for the
            # time: no pod loading, pending or serving, nothing queued, counters still.
            rows_now = [
                (cluster.spec[m], cluster.ready[m], 0, 0, 0, 0, arrivals_total[m], tokens_done[m])
                for m in range(n_models)
            ]
            seen_now = [[(seen[m][s], last_seen[m][s]) for s in Signal] for m in range(n_models)]
            while (now := min(next_scrape, next_tick)) < resume:
                if next_scrape == now:
                    scrape_times.append(now)
                    for m in range(n_models):
                        row = rows_now[m]
                        rows[m].append(row)
                        window_samples = samples[m]
                        window_samples.append((now, 0, 0, row[6], row[7]))
                        while len(window_samples) > 2 and window_samples[1][0] <= now - window:
                            window_samples.popleft()
                        for column, value in seen_now[m]:
                            column.append(value)
                        ages[m].append(last_age[m])
                    next_scrape += scrape_every
                if next_tick == now:
                    # What tick() records of an idle tick: its time and the sample's age.
                    tick_times.append(now)
                    skipped.append(now)
                    for m in range(n_models):
                        last_age[m] = now - samples[m][-1][0]
                    next_tick += tick_every
            skipper.skip(stretch, skipped)

        waker = self.autoscaler if isinstance(self.autoscaler, WakesOnHold) else None
        i = 0
        inf = math.inf
        while True:
            t_event = heap[0][0] if heap else inf
            t_arrival = arrival_list[i] if i < n else inf
            t_clock = min(next_scrape, next_tick)
            now = min(t_event, t_arrival, t_clock)
            if now > horizon:
                break
            if t_event == now:
                _, _, kind, pod, request = heapq.heappop(heap)
                m = pod.model
                if kind == _COMPLETE:
                    del pod.running[request]
                    pod.busy -= 1
                    running[m] -= 1
                    tokens_done[m] += output_list[request]
                    end[request] = now
                    finish(request, SERVED)
                    if pod.phase == PodPhase.READY:
                        free_slots[m] += 1
                        fill(pod, now)
                    elif pod.phase == PodPhase.TERMINATING and pod.busy == 0:
                        placed(cluster.drained(pod, now))
                elif cluster.mark_ready(pod):
                    free_slots[m] += runtimes[m].slots
                    fill(pod, now)
            elif t_arrival == now:
                m = model_list[i]
                arrivals_total[m] += 1
                if free_slots[m] > 0:
                    begin(best_pod(m), i, now)
                elif holds or cluster.ready[m] > 0:
                    queues[m].append(i)
                    held[i] = cluster.ready[m] == 0
                    if held[i] and waker is not None:
                        woken = waker.wake(self.names[m], now, cluster.spec[m])
                        if woken is not None and woken != cluster.spec[m]:
                            spec_changes.append((now, m, woken))
                            scale(m, woken, now)
                else:
                    finish(i, DROPPED)
                i += 1
            else:
                if next_scrape == now:
                    scrape(now)
                    next_scrape += scrape_every
                if next_tick == now:
                    view = tick(now)
                    next_tick += tick_every
                    if skipper is not None and view is not None:
                        until = idle_until(now)
                        if until > next_tick:
                            stretch = IdleStretch(view, until, scrape_every)
                            resume = min(until, skipper.skippable_until(stretch))
                            if resume > next_tick:
                                fast_forward(stretch, resume)
                if self.progress is not None and now >= next_progress:
                    self.progress(now, horizon)
                    next_progress = now + horizon / 200

        # The horizon: whatever is still waiting or running was given up by its client.
        for m in range(n_models):
            drop_queue(m)
        for pods in cluster.pods:
            for pod in pods:
                for request in list(pod.running):
                    finish(request, DROPPED)
        if i < n:
            raise ConservationError(f"{n - i} requests never arrived before the horizon")
        if PENDING in status:
            raise ConservationError("a request was left unfinished")
        if self.progress is not None:
            self.progress(horizon, horizon)

        records = tuple(
            PodRecord(p.model, p.created, p.placed_at, p.readied_at, p.ended_at, p.warm, p.id)
            for p in cluster.all_pods()
        )
        series = tuple(_series(rows[m], seen[m], ages[m]) for m in range(n_models))
        decisions = (
            tuple(self.autoscaler.decisions)
            if isinstance(self.autoscaler, RecordsDecisions)
            else ()
        )
        return SimulationResult(
            scenario=scenario.name,
            policy=self.autoscaler.name,
            models=self.names,
            policies=prepared.policies,
            memory_gib=tuple(t.memory_gib for t in cluster.templates),
            duration=horizon,
            wall_seconds=wallclock.perf_counter() - started,
            arrival=trace.time,
            model=trace.model,
            prompt=trace.prompt,
            output=trace.output,
            start=np.asarray(start, dtype=np.float64),
            end=np.asarray(end, dtype=np.float64),
            ttft=np.asarray(ttft, dtype=np.float64),
            prefilled=np.asarray(prefilled, dtype=np.float64),
            pod=np.asarray(served_by, dtype=np.int64),
            status=np.asarray(status, dtype=np.int64),
            held=np.asarray(held, dtype=np.bool_),
            holds_requests=holds,
            pods=records,
            spec_changes=tuple(spec_changes),
            initial_replicas=tuple(initial.get(p.model, p.replicas.min) for p in policies),
            scrape_times=np.asarray(scrape_times, dtype=np.float64),
            tick_times=np.asarray(tick_times, dtype=np.float64),
            series=series,
            decisions=decisions,
            nodes=scenario.cluster_nodes(),
            decode_rates=tuple(r.decode for r in self.runtimes),
        )


def _series(
    rows: list[tuple[int, int, int, int, int, int, int, float]],
    seen: Mapping[Signal, list[float]],
    ages: list[float],
) -> ModelSeries:
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    as_int = table[:, :7].astype(np.int64)
    return ModelSeries(
        spec=as_int[:, 0],
        ready=as_int[:, 1],
        starting=as_int[:, 2],
        pending=as_int[:, 3],
        queue=as_int[:, 4],
        running=as_int[:, 5],
        arrivals=as_int[:, 6],
        tokens=table[:, 7],
        signals={s: np.asarray(v, dtype=np.float64) for s, v in seen.items()},
        data_age=np.asarray(ages, dtype=np.float64),
    )


def _node_indices(scenario: Scenario, names: Sequence[str]) -> tuple[int, ...]:
    """The indices of the named nodes in the scenario's node list (validated to exist)."""
    return tuple(
        next(i for i, node in enumerate(scenario.nodes) if node.name == name) for name in names
    )


def simulate(
    prepared: PreparedScenario,
    autoscaler: Autoscaler,
    *,
    progress: Progress | None = None,
    fast_forward: bool = True,
) -> SimulationResult:
    """Run `prepared` under `autoscaler` (see the module docstring for the model).

    With `fast_forward` (and an autoscaler that ``FastForwards``), ticks in which provably
    nothing changes are skipped: the result is the same but for the decisions of the
    skipped ticks, which are not in ``SimulationResult.decisions``.
    """
    return Simulation(prepared, autoscaler, progress=progress, fast_forward=fast_forward).run()
