"""The control loop: observe -> decide_all -> publish -> actuate, once per tick.

One tick (`ControlLoop.tick`), with `now` from the injected clock:

1. observe: the metrics source (all models in one batch of queries, bounded by
   `read_timeout`), the cluster (target Deployments, nodes, model pods) from the Kubernetes
   API, or in ``--no-kubernetes`` mode the replica counts from Prometheus with placement
   unknown;
2. decide: ``scaler.core.decide_each`` for every model (no scaling rule lives here);
3. publish every decision to the DecisionStore (the only thing the API reads) and to the
   self-metrics; one structured log line per *changed* decision (desired or reasons);
4. actuate, on the leader only: zero crossings of on-demand models (actuator.py) and the
   state annotation (persistence.py).

Neither step 2 nor step 3 holds the event loop for long, so API requests are answered
during a tick: deciding (tens of ms for 1,000 models) and publishing (rendering each model's
answers, self-metrics, logs: as long again) run on the event loop a slice of models at a
time (SLICE_SECONDS), publishing into a draft of the store's next snapshot that readers do
not see. One ``DecisionStore.commit`` then makes the whole tick visible: a request sees the
previous tick or this one, for every model, never a mix. (Deciding in a worker thread
instead made every request of a tick wait for the GIL at each of its socket operations:
paced at 500 req/s with 1,000 models ticking, an open-loop p99 of 15-18 ms against 2-3 ms
in slices, the bare handler's 2.4-6.6 ms; benchmarks/api_throughput.py, docs/benchmarks.md.)

Faults never end the loop: a source that raises, times out or returns garbage gives a tick
without data (decide() holds: no scale-down on missing data); a Kubernetes read that fails
reuses the last read and skips actuation for that model; a write that fails is retried by
the next tick's fresh decision. Each fault has one clear log line.

Readiness: `health.mark_ready()` after the first *successful* tick, one in which the source
answered at least one query. If Prometheus is down at start the adapter stays unready (the
aggregator then answers 503 for it, and the HPA holds); once ready it stays ready, and
stale data is answered with 503 by the API after the staleness limit instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog

from scaler.api.store import DecisionStore
from scaler.core import (
    ClusterState,
    Decision,
    ModelPolicy,
    ModelState,
    Observation,
    decide_each,
)
from scaler.live.actuator import Actuator
from scaler.live.cluster_reader import ClusterObservation, ClusterReader
from scaler.live.kube import KubernetesApi, KubernetesError
from scaler.live.leader import LeaderElector
from scaler.live.persistence import (
    STATE_ANNOTATION,
    StateCheckpoints,
    decode_state,
    encode_state,
)
from scaler.sources import ReplicaCount, SourceReading

_log = structlog.get_logger("scaler.live.loop")


# ---- what the loop needs from its collaborators (structural, so tests can pass fakes) ----


class MetricsSource(Protocol):
    """The metrics source the loop reads (scaler.sources.PrometheusSource; tests pass fakes)."""

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """Every model's signals, in one batch of queries."""

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        """Replica counts from Prometheus (for --no-kubernetes mode)."""


class LoopMetrics(Protocol):
    """The self-metrics the loop feeds (scaler.api.selfmetrics.SelfMetrics)."""

    def observe_decision(self, decision: Decision, policy: ModelPolicy) -> None:
        """Export one decision."""

    def observe_query(self, signal: str, duration_seconds: float, error: bool) -> None:
        """Count one Prometheus query."""

    def observe_data_age(self, model: str, age_seconds: float) -> None:
        """How old the newest sample read for `model` is."""

    def set_leader(self, leader: bool) -> None:
        """Whether this replica actuates."""

    def observe_scale_write(self, model: str, result: str) -> None:
        """Count one scale write by result."""

    def observe_cold_start(self, model: str, seconds_to_ready: float) -> None:
        """Count a completed scale-up from zero."""

    def mark_tick(self, now: float) -> None:
        """The time a tick ended."""


class Readiness(Protocol):
    """The readiness flag behind /readyz (scaler.api.selfmetrics.Health)."""

    def mark_ready(self) -> None:
        """Called after the first successful tick."""


class NoMetrics:
    """LoopMetrics that records nothing (for tests that do not look at metrics)."""

    def observe_decision(self, decision: Decision, policy: ModelPolicy) -> None:
        """Ignore."""

    def observe_query(self, signal: str, duration_seconds: float, error: bool) -> None:
        """Ignore."""

    def observe_data_age(self, model: str, age_seconds: float) -> None:
        """Ignore."""

    def set_leader(self, leader: bool) -> None:
        """Ignore."""

    def observe_scale_write(self, model: str, result: str) -> None:
        """Ignore."""

    def observe_cold_start(self, model: str, seconds_to_ready: float) -> None:
        """Ignore."""

    def mark_tick(self, now: float) -> None:
        """Ignore."""


# ---- the Kubernetes side of the loop -------------------------------------------------------


@dataclass(frozen=True)
class KubernetesSide:
    """What the loop needs to read from and write to a cluster (absent in --no-kubernetes)."""

    api: KubernetesApi
    reader: ClusterReader
    actuator: Actuator
    elector: LeaderElector  # only the Lease holder actuates


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did (tests read it; `run()` discards it)."""

    now: float
    decisions: Mapping[str, Decision]
    source_ok: bool  # the source answered at least one query
    leader: bool
    scale_writes: Mapping[str, str]  # model -> result, for the models actuated


SLICE_SECONDS = 0.0005
"""How long a tick's work on the event loop (deciding, then rendering answers, self-metrics
and logs) runs before the loop serves requests again: a request arriving during a tick waits
about this long."""

SWITCH_INTERVAL_SECONDS = 0.0001
"""The interpreter's thread switch interval while the loop runs (the default is 5 ms): the
longest a worker thread (a Kubernetes API call decoding its answer) keeps the event loop
waiting for the GIL. A request waits that long at each of its socket operations (each lets
the worker take the GIL): when deciding still ran in a thread, paced at 500 req/s with 1,000
models ticking every second, p99 6.4 ms at 0.1 ms against 16.5 ms at 0.5 ms (same run)."""

GC_THRESHOLDS = (700, 2**31 - 1, 2**31 - 1)
"""The collector's thresholds while the loop runs: a young pass every 700 allocations
(CPython's default), and no automatic pass over the older generations (the last two figures
are never reached). What survives a young pass is then visited once and waits in the
middle generation for the full pass between two ticks (FULL_COLLECTION_EVERY_TICKS), where
collecting the middle one with every other young pass visited each survivor twice: with
1,000 models, ticks took 5-10 ms less (p50 36-42 ms against 47-51 ms, compiled core), the
longest pass inside a tick 2-3 ms either way. A tick makes no reference cycles, so what
waits there is alive, not garbage."""

FULL_COLLECTION_EVERY_TICKS = 60
"""Ticks between two full garbage collections while the loop runs (5 min at 5 s): each
stops the loop for one pass over the heap not frozen at start (18 ms with 1,000 models)."""

_NO_READING = SourceReading(models={}, queries=())

_T = TypeVar("_T")


_PAUSE_SECONDS = 1e-6
"""The pause between two slices: any positive delay, so that the next slice is a timer. The
event loop runs timers after the connections' callbacks of the same turn, so a request that
arrived during a slice is read before the next slice, and answered after it; resumed with
``sleep(0)``, the next slice would go first, and every request would wait two slices."""


async def _sliced(items: Iterable[_T]) -> AsyncIterator[_T]:
    """`items`, letting the event loop serve requests every SLICE_SECONDS."""
    yield_at = time.perf_counter() + SLICE_SECONDS
    for item in items:
        if time.perf_counter() >= yield_at:
            await asyncio.sleep(_PAUSE_SECONDS)
            yield_at = time.perf_counter() + SLICE_SECONDS
        yield item


class ControlLoop:
    """Drives decide_each once per tick; tests call `tick()` directly, serve calls `run()`."""

    def __init__(
        self,
        *,
        policies: Iterable[ModelPolicy],
        source: MetricsSource,
        store: DecisionStore,
        clock: Callable[[], float],
        metrics: LoopMetrics | None = None,
        health: Readiness | None = None,
        kubernetes: KubernetesSide | None = None,
        read_timeout: float = 5.0,
        checkpoints: StateCheckpoints | None = None,
    ) -> None:
        self.policies = tuple(sorted(policies, key=lambda p: p.model))
        self._by_model = {p.model: p for p in self.policies}
        self._source = source
        self._store = store
        self._clock = clock
        self._metrics: LoopMetrics = metrics or NoMetrics()
        self._health = health
        self._kube = kubernetes
        self._read_timeout = read_timeout
        self._checkpoints = checkpoints or StateCheckpoints()
        self.states: dict[str, ModelState] = {}
        self._loaded: set[str] = set()
        self._was_leader = False
        self._last: dict[str, Decision] = {}
        self._replicas: dict[str, ReplicaCount] = {}
        self._cold_start_began: dict[str, float] = {}
        self._ready = False
        self._source_faults: set[str] = set()  # source faults of the last tick, by event
        self._unknown: set[str] = set()  # models whose replica count is unknown
        self._replicas_failing = False  # the last replica count read failed (no Kubernetes)

    @property
    def leader(self) -> bool:
        """Whether this replica actuates now."""
        return self._kube is not None and self._kube.elector.is_leader

    async def run(self, *, interval: float, stop: asyncio.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; a tick's crash is logged.

        While it runs, the process is tuned for ticks that do not stall the API:

        - threads (Kubernetes API calls) switch every SWITCH_INTERVAL_SECONDS;
        - after the first tick what lives as long as the adapter (policies, self-metrics
          series, modules) is frozen out of the garbage collector, whose full passes over it
          held the GIL for 75-190 ms with 1,000 models;
        - the collector makes young passes only (`GC_THRESHOLDS`), and no full pass of
          its own: one made mid-tick went over every decision and state of the tick in one
          stretch (13-17 ms, 1,000 models). A full pass runs every
          FULL_COLLECTION_EVERY_TICKS ticks instead, between two ticks. A tick makes no
          reference cycles (a full pass after 20 ticks found none), so the rare pass only
          bounds what an unexpected cycle could hold.

        All of it is undone when it returns.
        """
        switch_interval = sys.getswitchinterval()
        thresholds = gc.get_threshold()
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        gc.set_threshold(*GC_THRESHOLDS)
        ticks = 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.tick()
                except Exception:  # a bug in one tick must not end the adapter
                    _log.exception("tick_failed")
                ticks += 1
                if ticks == 1:
                    gc.collect()  # once, so that no garbage is frozen for good
                    gc.freeze()
                elif ticks % FULL_COLLECTION_EVERY_TICKS == 0:
                    gc.collect()
                delay = max(0.0, interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            sys.setswitchinterval(switch_interval)

    async def tick(self) -> TickResult:
        """One observe -> decide -> publish -> actuate pass."""
        now = self._clock()
        leader = self.leader
        if leader != self._was_leader:
            self._metrics.set_leader(leader)
        cluster_obs: ClusterObservation | None = None
        if self._kube is not None:
            # Prometheus and the Kubernetes API are read at the same time: a slow one does
            # not delay the other's answer into the next tick.
            (reading, source_ok), observed = await asyncio.gather(
                self._read_source(now), self._kube.reader.observe(self.policies)
            )
            cluster_obs = observed
            replicas = {m: (d.replicas, d.ready_replicas) for m, d in observed.deployments.items()}
            cluster = observed.cluster
            if leader and not self._was_leader:
                # Adopt what the former leader persisted, each model at its next fresh read
                # (a Deployment whose read fails now is reloaded when it next succeeds).
                self._loaded.clear()
            self._load_states(observed, now, leader=leader)
        else:
            (reading, source_ok), replicas = await asyncio.gather(
                self._read_source(now), self._replica_counts()
            )
            cluster = ClusterState()  # placement unknown
        self._was_leader = leader

        decisions, next_states = await self._decide(reading, replicas, cluster, now)
        await self._publish(decisions, now)

        writes: dict[str, str] = {}
        if leader and self._kube is not None and cluster_obs is not None:
            writes = await self._actuate(decisions, next_states, cluster_obs, now)
        async for model, state in _sliced(next_states.items()):
            self.states[model] = state  # frees the model's previous state (see _publish)
        self._metrics.mark_tick(self._clock())
        if source_ok and not self._ready and self._health is not None:
            self._health.mark_ready()
            _log.info("ready", models=len(self.policies))
        self._ready = self._ready or source_ok
        return TickResult(now, decisions, source_ok, leader, writes)

    async def _decide(
        self,
        reading: SourceReading,
        replicas: Mapping[str, tuple[int, int]],
        cluster: ClusterState,
        now: float,
    ) -> tuple[dict[str, Decision], dict[str, ModelState]]:
        """Observations, then decide_each: this tick's decisions and next states.

        Runs on the event loop a slice of models at a time (`_sliced`), so a request that
        arrives meanwhile waits one slice. Between slices nothing else of the loop runs
        (ticks do not overlap), so the states it reads stay as they were.
        """
        observations: dict[str, Observation] = {}
        async for policy in _sliced(self.policies):
            if policy.model not in replicas:
                continue
            current, ready = replicas[policy.model]
            model_reading = reading.models.get(policy.model)
            if model_reading is not None and model_reading.sample_time is not None:
                self._metrics.observe_data_age(policy.model, now - model_reading.sample_time)
            observations[policy.model] = Observation(
                model=policy.model,
                signals=dict(model_reading.signals) if model_reading else {},
                sample_time=model_reading.sample_time if model_reading else None,
                current_replicas=current,
                ready_replicas=ready,
            )
        deciding = [p for p in self.policies if p.model in observations]
        for policy in self.policies:
            observation = observations.get(policy.model)
            if observation is None:
                if policy.model not in self._unknown:  # once per outage, not every tick
                    _log.warning(
                        "replicas_unknown", model=policy.model, action="not decided meanwhile"
                    )
                self._unknown.add(policy.model)
                continue
            self._unknown.discard(policy.model)
            # A model never seen starts fresh: decide() holds its running count (first sync).
            self.states.setdefault(policy.model, ModelState())
        states = {m: self.states[m] for m in observations}
        decisions: dict[str, Decision] = {}
        next_states: dict[str, ModelState] = {}
        steps = decide_each(observations, deciding, states, cluster, now)
        async for decision, state in _sliced(steps):
            decisions[decision.model] = decision
            next_states[decision.model] = state
        return decisions, next_states

    # ---- observe --------------------------------------------------------------------------

    def _report(self, faults: Mapping[str, Mapping[str, object]]) -> None:
        """Log this tick's source faults: a warning the first time each kind shows during an
        outage, debug while it lasts (an hour-long outage must not write 720 identical
        warnings, and a flaky one alternating between a timeout and failed queries must not
        warn every tick), info when all clear."""
        for event, fields in faults.items():
            (_log.debug if event in self._source_faults else _log.warning)(event, **fields)
        if self._source_faults and not faults:
            _log.info("prometheus_recovered", after=sorted(self._source_faults))
            self._source_faults = set()
        else:
            self._source_faults |= set(faults)

    async def _read_source(self, now: float) -> tuple[SourceReading, bool]:
        hold = "no data this tick: holding replicas"
        try:
            reading = await asyncio.wait_for(
                self._source.read(self.policies), timeout=self._read_timeout
            )
        except TimeoutError:
            timeout = {"timeout_seconds": self._read_timeout, "action": hold}
            self._report({"prometheus_timeout": timeout})
            return _NO_READING, False
        except Exception as exc:  # any source failure is "no data", never a crash
            cause = {"error": f"{type(exc).__name__}: {exc}", "action": hold}
            self._report({"prometheus_unavailable": cause})
            return _NO_READING, False
        faults: dict[str, Mapping[str, object]] = {}
        failed = 0
        for query in reading.queries:
            error = bool(query.error)
            failed += error
            self._metrics.observe_query(query.signal, query.duration_seconds, error)
        ok = not reading.queries or failed < len(reading.queries)
        if failed:
            faults["prometheus_query_failed" if ok else "prometheus_unavailable"] = {
                "failed": failed,
                "queries": len(reading.queries),
                "errors": sorted({str(q.error) for q in reading.queries if q.error})[:3],
                "action": "missing signals hold replicas",
            }
        garbage = sorted(
            f"{m}:{s}"
            for m, r in reading.models.items()
            for s, v in r.signals.items()
            if not (math.isfinite(v) and v >= 0.0)
        )
        if garbage:
            faults["prometheus_garbage_values"] = {
                "series": garbage[:5],
                "action": "non-finite or negative values ignored",
            }
        self._report(faults)
        return reading, ok

    async def _replica_counts(self) -> dict[str, tuple[int, int]]:
        try:
            counts = await asyncio.wait_for(
                self._source.replica_counts(self.policies), timeout=self._read_timeout
            )
        except Exception as exc:  # a timeout included: once per outage, as the source faults
            (_log.debug if self._replicas_failing else _log.warning)(
                "replica_counts_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                action="using the last counts",
            )
            self._replicas_failing = True
        else:
            self._replicas.update(counts)
            if self._replicas_failing:
                _log.info("replica_counts_recovered")
            self._replicas_failing = False
        return {m: (c.current, c.ready) for m, c in self._replicas.items()}

    def _load_states(self, observed: ClusterObservation, now: float, *, leader: bool) -> None:
        """Read the saved state of each freshly read model not loaded since start or since
        this replica became leader."""
        for model in observed.fresh - self._loaded:
            deployment = observed.deployments[model]
            state = decode_state(deployment.annotations, model=model)
            self.states[model] = state
            self._loaded.add(model)
            if STATE_ANNOTATION in deployment.annotations:
                self._checkpoints.loaded(model, state, now)
            _log.info(
                "state_loaded",
                model=model,
                reason="became leader" if leader else "start",
                saved=STATE_ANNOTATION in deployment.annotations,
            )

    # ---- publish --------------------------------------------------------------------------

    async def _publish(self, decisions: Mapping[str, Decision], now: float) -> None:
        """Store, export and log the tick's decisions, a slice at a time, then commit.

        Between slices the event loop serves requests, from the previous tick: the draft is
        invisible until the commit, which makes the whole tick visible at once.
        """
        draft = self._store.draft()
        async for decision in _sliced(decisions.values()):
            draft.add((decision,))
            self._metrics.observe_decision(decision, self._by_model[decision.model])
            self._log_if_changed(decision)
            self._track_cold_start(decision, now)
        replaced = self._store.commit(draft.snapshot())
        # What the commit replaced goes in slices too: freed at once, a 1,000-model snapshot
        # is one cascade of deallocations that holds the loop for milliseconds.
        async for _ in _sliced(replaced.release()):
            pass

    def _log_if_changed(self, decision: Decision) -> None:
        previous = self._last.get(decision.model)
        self._last[decision.model] = decision
        if (
            previous is not None
            and previous.desired_replicas == decision.desired_replicas
            and previous.reasons == decision.reasons
        ):
            return
        _log.info(
            "decision",
            model=decision.model,
            desired=decision.desired_replicas,
            current=decision.current_replicas,
            ready=decision.ready_replicas,
            starting=decision.starting_replicas,
            reasons=[r.value for r in decision.reasons],
            signals={s.value: v for s, v in decision.signals.items()},
            demand=decision.demand,
            placement_cap=decision.placement_cap,
        )

    def _track_cold_start(self, decision: Decision, now: float) -> None:
        began = self._cold_start_began.get(decision.model)
        if began is not None and decision.ready_replicas > 0:
            self._metrics.observe_cold_start(decision.model, max(0.0, now - began))
            del self._cold_start_began[decision.model]

    # ---- actuate (leader) -----------------------------------------------------------------

    async def _actuate(
        self,
        decisions: Mapping[str, Decision],
        next_states: dict[str, ModelState],
        observed: ClusterObservation,
        now: float,
    ) -> dict[str, str]:
        """Write what the leader owns; a failed write keeps the model's previous state.

        The next state describes a world in which this tick's decision was carried out; when
        our write of it failed, the next tick decides as if this one had not asked (a write
        that did land unseen, a timeout after apply, shows in the next read of the scale).
        """
        assert self._kube is not None
        writes: dict[str, str] = {}
        for model, decision in decisions.items():
            if model not in observed.fresh:
                continue
            policy = self._by_model[model]
            deployment = observed.deployments[model]
            result = await self._kube.actuator.actuate(decision, policy, deployment)
            if result is not None:
                writes[model] = result
                if result == "ok" and deployment.replicas == 0:
                    self._cold_start_began[model] = now
                if result not in ("ok", "unchanged"):
                    next_states[model] = self.states[model]
                    continue
            await self._persist(policy, next_states[model], now)
        return writes

    async def _persist(self, policy: ModelPolicy, state: ModelState, now: float) -> None:
        assert self._kube is not None
        if not self._checkpoints.due(policy.model, state, now):
            return
        try:
            await self._kube.api.patch_annotations(
                policy.target.namespace,
                policy.target.deployment,
                {STATE_ANNOTATION: encode_state(state)},
            )
        except KubernetesError as exc:
            _log.warning(
                "state_write_failed",
                model=policy.model,
                error=str(exc),
                status=exc.status,
                action="retrying on the next tick",
            )
            return
        self._checkpoints.written(policy.model, state, now)
