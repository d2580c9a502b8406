"""The adapter's own Prometheus metrics (/metrics) and its health flags (/readyz).

Every name comes from ``scaler.metric_names``. The registry is owned by the instance, not
prometheus_client's global one, so tests and several apps in one process never collide.
The control loop calls the ``observe_*``/``set_*``/``mark_*`` methods; the API server's
per-route guard calls ``observe_api_request``; ``/metrics`` renders ``exposition()``.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from scaler import metric_names as names
from scaler.core import Decision, ModelPolicy, Signal

EXPOSITION_CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""Prometheus text format 0.0.4, which every Prometheus version scrapes."""

API_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Bucket bounds (s) of the API latency histogram: requests are answered from memory, most
well under a millisecond."""
_QUERY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Cold starts run from seconds (tinyllama) to minutes (Mixtral from a cold page cache).
_COLD_START_BUCKETS: Final = (5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)


# No ``<counter>_created`` / ``<histogram>_created`` series: in the text format each is a
# gauge of its own (``scaler_decisions_created``...), noise on every dashboard query. The
# switch is process-wide (prometheus_client 0.26 has no per-registry one); this process
# serves these metrics only.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class SelfMetrics:
    """The adapter's self-metrics in a private CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._desired = Gauge(
            names.DESIRED_REPLICAS, "Replicas scaler asks for.", ["model"], registry=r
        )
        self._current = Gauge(
            names.CURRENT_REPLICAS, "Replicas requested now (spec.replicas).", ["model"], registry=r
        )
        self._ready = Gauge(names.READY_REPLICAS, "Replicas ready.", ["model"], registry=r)
        self._starting = Gauge(
            names.STARTING_REPLICAS, "Replicas requested but not ready yet.", ["model"], registry=r
        )
        self._cap = Gauge(
            names.PLACEMENT_CAP, "Most replicas that fit on the nodes.", ["model"], registry=r
        )
        self._signal = Gauge(
            names.SIGNAL_VALUE,
            "Signal value summed over the model's replicas.",
            ["model", "signal"],
            registry=r,
        )
        self._target = Gauge(
            names.SIGNAL_TARGET,
            "Per-replica target of the signal.",
            ["model", "signal"],
            registry=r,
        )
        self._decisions = Counter(
            names.DECISIONS.removesuffix("_total"),
            "Decisions, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self._cold_starts = Counter(
            names.COLD_STARTS.removesuffix("_total"),
            "Scale-ups from zero that became ready.",
            ["model"],
            registry=r,
        )
        self._cold_start_seconds = Histogram(
            names.COLD_START_DURATION,
            "Seconds from scale-up to ready, from zero.",
            ["model"],
            buckets=_COLD_START_BUCKETS,
            registry=r,
        )
        self._data_age = Gauge(
            names.DATA_AGE, "Age of the newest sample read for the model.", ["model"], registry=r
        )
        self._last_tick = Gauge(
            names.LAST_TICK, "Unix time at which the last control tick ended.", registry=r
        )
        self._query_seconds = Histogram(
            names.PROMETHEUS_QUERY_DURATION,
            "Prometheus query latency.",
            ["signal"],
            buckets=_QUERY_BUCKETS,
            registry=r,
        )
        self._query_errors = Counter(
            names.PROMETHEUS_QUERY_ERRORS.removesuffix("_total"),
            "Prometheus queries that failed.",
            ["signal"],
            registry=r,
        )
        self._queries = Counter(
            names.PROMETHEUS_QUERIES.removesuffix("_total"),
            "Prometheus queries sent.",
            ["signal"],
            registry=r,
        )
        self._api_seconds = RequestLatency(
            names.API_REQUEST_DURATION, "API request latency by route and status code."
        )
        r.register(self._api_seconds)
        self._leader = Gauge(
            names.LEADER, "1 while this replica holds the leader lease.", registry=r
        )
        self._scale_writes = Counter(
            names.SCALE_WRITES.removesuffix("_total"),
            "Writes to a Deployment's scale subresource, by result.",
            ["model", "result"],
            registry=r,
        )
        self._sizing = {
            metric: Gauge(metric, help_text, ["model"], registry=r)
            for metric, help_text in (
                (names.SIZED_REPLICAS, "Replicas the SLO queueing model asks for."),
                (names.SERVICE_SECONDS, "Calibrated mean service time of a request."),
                (names.ARRIVAL_RATE, "Arrival rate the model is sized for (requests/s)."),
                (names.PREDICTED_WAIT, "Predicted queue wait at the SLO percentile."),
                (names.PREDICTED_OVERFLOW, "Predicted chance the slots overrun in a reaction."),
            )
        }
        self._slo_wait = Gauge(
            names.SLO_WAIT, "The policy's queue-wait SLO threshold.", ["model"], registry=r
        )
        self._keep_alive = Gauge(
            names.KEEP_ALIVE, "Idle time after which the model goes to zero.", ["model"], registry=r
        )
        self._leader.set(0)
        # Decision series set by observe_decision, and the value each holds.
        self._gauge_children: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}
        self._gauge_values: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        self._decision_children: dict[tuple[str, str], Counter] = {}

    def observe_decision(self, decision: Decision, policy: ModelPolicy) -> None:
        """Export one decision: replica gauges, signal values and targets, reasons counted."""
        model = decision.model
        self._set(self._desired, decision.desired_replicas, model)
        self._set(self._current, decision.current_replicas, model)
        self._set(self._ready, decision.ready_replicas, model)
        self._set(self._starting, decision.starting_replicas, model)
        if decision.placement_cap is None:
            # "Absent when unknown": a stale cap would read as a real limit on dashboards.
            self._drop(self._cap, model)
        else:
            self._set(self._cap, decision.placement_cap, model)
        for signal in Signal:
            if signal in decision.signals:
                self._set(self._signal, decision.signals[signal], model, signal.value)
            else:  # missing now: an old value would read as a current one
                self._drop(self._signal, model, signal.value)
        for signal, target in policy.targets.items():
            self._set(self._target, target, model, signal.value)
        for reason in decision.reasons:
            key = (model, reason.value)
            counter = self._decision_children.get(key)
            if counter is None:
                counter = self._decision_children[key] = self._decisions.labels(*key)
            counter.inc()
        self._set(self._slo_wait, policy.slo.queue_wait_seconds, model)
        sizing = decision.sizing
        values = (
            {}
            if sizing is None
            else {
                names.SIZED_REPLICAS: float(sizing.replicas),
                names.SERVICE_SECONDS: sizing.service_seconds,
                names.ARRIVAL_RATE: sizing.arrival_rate,
                names.PREDICTED_WAIT: sizing.predicted_wait_s,
                names.PREDICTED_OVERFLOW: sizing.predicted_miss,
            }
        )
        for metric, gauge in self._sizing.items():
            value = values.get(metric)
            if value is None or not math.isfinite(value):
                # Not sized now (or an overloaded, endless wait): absent, never a stale value.
                self._drop(gauge, model)
            else:
                self._set(gauge, value, model)
        if decision.keep_alive_s is None:
            self._drop(self._keep_alive, model)
        else:
            self._set(self._keep_alive, decision.keep_alive_s, model)

    def _set(self, family: Gauge, value: float, *labels: str) -> None:
        """Set the series of `family` with `labels` to `value`, if it changed.

        The children are kept and unchanged values skipped: a tick sets some 15 series per
        model, and labels() plus set() cost a lock and a lookup each (1,000 models: tens of
        ms a tick); most of them (targets, replica counts) hold still from tick to tick.
        """
        key = (family, labels)
        if self._gauge_values.get(key) == value:
            return
        child = self._gauge_children.get(key)
        if child is None:
            child = self._gauge_children[key] = family.labels(*labels)
        child.set(value)
        self._gauge_values[key] = value

    def _drop(self, family: Gauge, *labels: str) -> None:
        """Remove the series of `family` with `labels`, if it was ever set."""
        key = (family, labels)
        if self._gauge_children.pop(key, None) is not None:
            del self._gauge_values[key]
            family.remove(*labels)

    def observe_query(self, signal: str, duration_seconds: float, error: bool) -> None:
        """Count one Prometheus query for `signal`, its latency, and whether it failed."""
        self._queries.labels(signal).inc()
        self._query_seconds.labels(signal).observe(duration_seconds)
        if error:
            self._query_errors.labels(signal).inc()

    def observe_data_age(self, model: str, age_seconds: float) -> None:
        """Record how old the newest sample read for `model` is."""
        self._data_age.labels(model).set(age_seconds)

    def set_leader(self, leader: bool) -> None:
        """Whether this replica holds the lease (and so actuates)."""
        self._leader.set(1 if leader else 0)

    def observe_scale_write(self, model: str, result: str) -> None:
        """Count one scale-subresource write for `model` with its `result` (ok, conflict...)."""
        self._scale_writes.labels(model, result).inc()

    def observe_cold_start(self, model: str, seconds_to_ready: float) -> None:
        """Count a completed scale-up from zero and how long it took to become ready."""
        self._cold_starts.labels(model).inc()
        self._cold_start_seconds.labels(model).observe(seconds_to_ready)

    def mark_tick(self, now: float) -> None:
        """Record the (Unix) time at which a control tick ended."""
        self._last_tick.set(now)

    def observe_api_request(self, path: str, code: int, duration_seconds: float) -> None:
        """Record one API request by route template (never the raw path) and status code.

        Call it from the thread that renders ``exposition()`` (the event loop): the counts
        take no lock (see `RequestLatency`).
        """
        self._api_seconds.observe(path, code, duration_seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


class _LatencySeries:
    """One (route, code) series of `RequestLatency`: per-bucket counts, their sum, and when it
    was created."""

    __slots__ = ("counts", "created", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.created = time.time()


class RequestLatency(Collector):
    """The API latency histogram ``{path, code}``, counted without locks.

    prometheus_client's ``Histogram.observe`` takes a lock per bucket update and per sum,
    several microseconds on a request path that is otherwise a dictionary lookup; every
    request of the external metrics API is observed here, so this collector keeps plain
    counts instead and renders the same samples (``_bucket``, ``_count``, ``_sum``,
    ``_created``; `API_LATENCY_BUCKETS`) when scraped. It is not thread-safe: observe and collect
    on one thread (the event loop serves both the API and /metrics).
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*API_LATENCY_BUCKETS, math.inf)
        # The `le` labels as Histogram writes them ("+Inf" last); untyped upstream.
        self._les = tuple(floatToGoString(b) for b in self._bounds)  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, int], _LatencySeries] = {}

    def observe(self, path: str, code: int, seconds: float) -> None:
        """Count one request of `path` (route template) answered with `code`."""
        series = self._series.get((path, code))
        if series is None:
            series = self._series[(path, code)] = _LatencySeries(len(self._bounds))
        # The first bucket whose bound is at least the duration, as Histogram.observe picks.
        series.counts[bisect_left(self._bounds, seconds)] += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        """The histogram family and its ``_created`` samples, as ``Histogram`` writes them."""
        metric = Metric(self._name, self._documentation, "histogram")
        for (path, code), series in list(self._series.items()):
            labels = {"path": path, "code": str(code)}
            cumulative = 0.0
            for le, count in zip(self._les, series.counts, strict=True):
                cumulative += count
                metric.add_sample(f"{self._name}_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(f"{self._name}_count", labels, cumulative)
            metric.add_sample(f"{self._name}_sum", labels, series.total)
            # As Histogram: no _created series once prometheus_client's
            # disable_created_metrics() (or PROMETHEUS_DISABLE_CREATED_SERIES) turned them off.
            if getattr(prometheus_metrics, "_use_created", True):
                metric.add_sample(f"{self._name}_created", labels, series.created)
        yield metric


class Health:
    """Readiness of the adapter: ready once the first control tick has succeeded.

    Liveness needs no flag: a /livez answer proves the process runs and its event loop turns.
    """

    def __init__(self) -> None:
        self._ready = False

    def mark_ready(self) -> None:
        """Called by the control loop after its first successful tick; stays ready after."""
        self._ready = True

    @property
    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        return self._ready
