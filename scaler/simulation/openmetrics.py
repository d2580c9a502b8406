"""Export a simulation as OpenMetrics text, under the metric names the live adapter exports.

Backfilled with ``promtool tsdb create-blocks-from openmetrics FILE DIR``, a simulated run
shows on the same Grafana dashboards as the cluster. Samples are taken at every simulated
Prometheus scrape; timestamps are seconds, virtual time 0 being `EPOCH` (a fixed instant,
so two exports of one run are identical). The file ends with ``# EOF`` as promtool needs.

Series (label ``model`` on each unless said; names from ``scaler.metric_names``), all
computed from the simulated run:

- desired, current (``spec.replicas``), ready and starting replicas; the signal values the
  autoscaler saw and the policy's per-replica targets (label ``signal``);
- cold starts (scale-ups from zero, counter) and their duration (histogram, the adapter's
  buckets): from the write that took the model off zero to its first pod Ready after it,
  observed at that instant (the live adapter observes it at its next tick);
- the age of the newest sample the autoscaler saw at its last tick (absent while it saw
  none), the time of the last tick (no label), and ``scaler_leader`` 1 (no label): one
  simulated autoscaler, which is the leader;
- for the ``scaler`` policy the decisions by reason (counter, label ``reason``), the
  placement cap, and its writes to the scale subresource (``result="ok"``): the zero
  crossings, which scaler writes itself (the HPA owns 1..N); other policies have no decision
  record, and their desired replicas are the ``spec.replicas`` they wrote;
- for the ``scaler`` policy the SLO sizing of each decision (sized replicas, calibrated
  service time, arrival rate sized for, predicted wait and overflow, absent while a decision
  was not sized or the wait is endless), the policy's SLO threshold, and the keep-alive of
  on-demand models;
- when the request path holds requests at zero Ready pods (``scaler``, ``kpa``, ``oracle``),
  the activator's series, as if every request passed the activator: pending requests (the
  queue while no replica was Ready), the wait histogram (arrival to start of the requests
  that arrived while no replica was Ready, observed when forwarded), forwarded requests
  (every request that started on a pod: on arrival, or when held, at its start), and
  timeouts: held requests still waiting when the run ends, which the engine drops then
  (their clients gave up); they also count in
  ``scaler_activator_rejected_total{reason="timeout"}`` as the activator counts its hold
  timeouts. The simulated queue is unbounded and has no body limit, so no other rejection
  reason can happen and none is exported. These counters get one more sample at the end of
  the run, when those requests are dropped.

Then the series the model server pods, cAdvisor and kube-state-metrics would have exposed
(`scaler.simulation.engine_metrics`), which ``scaler record`` and ``scaler calibrate`` read.

Left out, having no meaning in a simulation: API request latency and the adapter's
Prometheus query latency, errors and counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from scaler import metric_names
from scaler.core import Decision, Signal
from scaler.simulation import engine_metrics
from scaler.simulation.engine import SimulationResult

ACTIVATOR_WAIT_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 15, 20, 30, 60, 90, 120, 180, 240, 300, 600,
)  # fmt: skip
"""The activator's wait buckets (``scaler.activator.metrics.WAIT_BUCKETS``, a sibling layer the
simulator may not import; a test keeps the two equal)."""

COLD_START_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
"""The adapter's cold-start buckets (``scaler.api.selfmetrics``; a test keeps them equal)."""

EPOCH = 1_767_225_600.0
"""Virtual time 0 as Unix time: 2026-01-01T00:00:00Z."""

_HELP = {
    metric_names.DESIRED_REPLICAS: "Desired replicas (simulated).",
    metric_names.CURRENT_REPLICAS: "Deployment spec.replicas (simulated).",
    metric_names.READY_REPLICAS: "Ready replicas (simulated).",
    metric_names.STARTING_REPLICAS: "Requested replicas not ready yet (simulated).",
    metric_names.PLACEMENT_CAP: "Most replicas that fit on the nodes (simulated).",
    metric_names.SIGNAL_VALUE: "Signal value the autoscaler saw, summed over replicas.",
    metric_names.SIGNAL_TARGET: "Per-replica target of the signal.",
    metric_names.DECISIONS: "Decisions by reason (simulated).",
    metric_names.COLD_STARTS: "Scale-ups from zero (simulated).",
    metric_names.COLD_START_DURATION: "Seconds from scale-up to ready, from zero (simulated).",
    metric_names.DATA_AGE: "Age of the newest sample the autoscaler saw (simulated).",
    metric_names.LAST_TICK: "Unix time of the last control tick (simulated).",
    metric_names.LEADER: "1: the one simulated autoscaler is the leader.",
    metric_names.SCALE_WRITES: "Zero-crossing writes to the scale subresource (simulated).",
    metric_names.SIZED_REPLICAS: "Replicas the SLO queueing model asked for (simulated).",
    metric_names.SERVICE_SECONDS: "Calibrated mean service time of a request (simulated).",
    metric_names.ARRIVAL_RATE: "Arrival rate the model was sized for (simulated).",
    metric_names.PREDICTED_WAIT: "Predicted queue wait at the SLO percentile (simulated).",
    metric_names.PREDICTED_OVERFLOW: "Predicted chance the slots overrun (simulated).",
    metric_names.SLO_WAIT: "The policy's queue-wait SLO threshold.",
    metric_names.KEEP_ALIVE: "Idle time after which the model goes to zero (simulated).",
    metric_names.ACTIVATOR_PENDING: "Requests held while no replica was ready (simulated).",
    metric_names.ACTIVATOR_WAIT: "Seconds a held request waited before it was forwarded.",
    metric_names.ACTIVATOR_FORWARDED: "Requests forwarded to a model server (simulated).",
    metric_names.ACTIVATOR_TIMEOUTS: "Held requests given up at the end of the run.",
    metric_names.ACTIVATOR_REJECTED: "Requests answered by the activator, by reason.",
}


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class _Writer:
    """Collects families; each family's series are contiguous, each series time-ordered."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        series: Iterable[tuple[str, Iterable[tuple[float, float]]]],
    ) -> None:
        body: list[str] = []
        for labels, points in series:
            body.extend(f"{name}{labels} {_number(v)} {EPOCH + t:.3f}" for t, v in points)
        if not body:
            return
        family = name.removesuffix("_total") if kind == "counter" else name
        self.lines.append(f"# TYPE {family} {kind}")
        self.lines.append(f"# HELP {family} {_HELP[name]}")
        self.lines.extend(body)

    def histogram(
        self,
        name: str,
        buckets: tuple[float, ...],
        series: Iterable[tuple[str, list[float], list[tuple[float, float]]]],
    ) -> None:
        """One histogram family: per (model label, times, (event time, value) observations),
        the cumulative buckets, count and sum at every time."""
        body: list[str] = []
        bounds = [*(float(b) for b in buckets), math.inf]
        # As prometheus_client writes them, so PromQL sees the same `le` values as live.
        les = [*(repr(b) for b in bounds[:-1]), "+Inf"]
        for model, times, observations in series:
            ordered = sorted(observations)
            stamps = np.array([t for t, _ in ordered])
            values = np.array([v for _, v in ordered], dtype=np.float64)
            at = np.searchsorted(stamps, np.asarray(times), side="right")
            sums = np.concatenate(([0.0], np.cumsum(values)))[at]
            per_bucket = [np.concatenate(([0], np.cumsum(values <= b)))[at] for b in bounds]
            for k, t in enumerate(times):
                stamp = f"{EPOCH + t:.3f}"
                for le, counts in zip(les, per_bucket, strict=True):
                    body.append(f"{name}_bucket{_labels(model=model, le=le)} {counts[k]} {stamp}")
                body.append(f"{name}_count{_labels(model=model)} {at[k]} {stamp}")
                body.append(f"{name}_sum{_labels(model=model)} {_number(sums[k])} {stamp}")
        if not body:
            return
        self.lines.append(f"# TYPE {name} histogram")
        self.lines.append(f"# HELP {name} {_HELP[name]}")
        self.lines.extend(body)


def render(result: SimulationResult) -> str:
    """The OpenMetrics text of one run (see the module docstring)."""
    times = result.scrape_times.tolist()
    by_model: dict[int, list[Decision]] = {m: [] for m in range(len(result.models))}
    for decision in result.decisions:
        by_model[result.models.index(decision.model)].append(decision)
    out = _Writer()

    def per_model(values: list[np.ndarray]) -> Iterator[tuple[str, Iterable[tuple[float, float]]]]:
        for m, name in enumerate(result.models):
            yield _labels(model=name), zip(times, values[m].tolist(), strict=True)

    desired = [
        _latest(times, by_model[m], lambda d: float(d.desired_replicas))
        if by_model[m]
        else s.spec.astype(np.float64)
        for m, s in enumerate(result.series)
    ]
    out.family(metric_names.DESIRED_REPLICAS, "gauge", per_model(desired))
    out.family(metric_names.CURRENT_REPLICAS, "gauge", per_model([s.spec for s in result.series]))
    out.family(metric_names.READY_REPLICAS, "gauge", per_model([s.ready for s in result.series]))
    starting = [np.maximum(0, s.spec - s.ready) for s in result.series]
    out.family(metric_names.STARTING_REPLICAS, "gauge", per_model(starting))
    caps = [
        _latest(
            times, by_model[m], lambda d: math.nan if d.placement_cap is None else d.placement_cap
        )
        for m in range(len(result.models))
    ]
    out.family(
        metric_names.PLACEMENT_CAP,
        "gauge",
        (
            (_labels(model=name), _finite(times, caps[m]))
            for m, name in enumerate(result.models)
            if by_model[m]
        ),
    )
    sized: dict[str, Callable[[Decision], float]] = {
        metric_names.SIZED_REPLICAS: lambda d: math.nan if d.sizing is None else d.sizing.replicas,
        metric_names.SERVICE_SECONDS: lambda d: (
            math.nan if d.sizing is None else d.sizing.service_seconds
        ),
        metric_names.ARRIVAL_RATE: lambda d: (
            math.nan if d.sizing is None else d.sizing.arrival_rate
        ),
        metric_names.PREDICTED_WAIT: lambda d: (
            math.nan if d.sizing is None else d.sizing.predicted_wait_s
        ),
        metric_names.PREDICTED_OVERFLOW: lambda d: (
            math.nan if d.sizing is None else d.sizing.predicted_miss
        ),
        metric_names.KEEP_ALIVE: lambda d: math.nan if d.keep_alive_s is None else d.keep_alive_s,
    }
    for metric, value_of in sized.items():
        out.family(
            metric,
            "gauge",
            (
                (_labels(model=name), _finite(times, _latest(times, by_model[m], value_of)))
                for m, name in enumerate(result.models)
                if by_model[m]
            ),
        )
    out.family(
        metric_names.SLO_WAIT,
        "gauge",
        (
            (_labels(model=policy.model), ((t, policy.slo.queue_wait_seconds) for t in times))
            for m, policy in enumerate(result.policies)
            if by_model[m]
        ),
    )
    out.family(
        metric_names.SIGNAL_VALUE,
        "gauge",
        (
            (_labels(model=name, signal=signal.value), _finite(times, s.signals[signal]))
            for (name, s) in zip(result.models, result.series, strict=True)
            for signal in Signal
        ),
    )
    out.family(
        metric_names.SIGNAL_TARGET,
        "gauge",
        (
            (
                _labels(model=policy.model, signal=signal.value),
                ((t, target) for t in times),
            )
            for policy in result.policies
            for signal, target in policy.targets.items()
        ),
    )
    out.family(
        metric_names.DECISIONS,
        "counter",
        (
            (_labels(model=name, reason=reason), points)
            for m, name in enumerate(result.models)
            for reason, points in _reason_counts(times, by_model[m]).items()
        ),
    )
    out.family(
        metric_names.COLD_STARTS,
        "counter",
        (
            (_labels(model=name), zip(times, _wakes(result, m, times), strict=True))
            for m, name in enumerate(result.models)
        ),
    )
    out.histogram(
        metric_names.COLD_START_DURATION,
        COLD_START_BUCKETS,
        ((name, times, _cold_starts(result, m)) for m, name in enumerate(result.models)),
    )
    out.family(
        metric_names.DATA_AGE,
        "gauge",
        (
            (_labels(model=name), _finite(times, s.data_age))
            for name, s in zip(result.models, result.series, strict=True)
        ),
    )
    # A scrape at a tick's instant comes before that tick (engine order): the last tick
    # it sees is the one strictly before.
    last = np.searchsorted(result.tick_times, np.asarray(times), side="left") - 1
    out.family(
        metric_names.LAST_TICK,
        "gauge",
        [
            (
                "",
                [
                    (t, EPOCH + result.tick_times[k])
                    for t, k in zip(times, last.tolist(), strict=True)
                    if k >= 0
                ],
            )
        ],
    )
    out.family(metric_names.LEADER, "gauge", [("", ((t, 1.0) for t in times))])
    if result.policy == "scaler":
        out.family(
            metric_names.SCALE_WRITES,
            "counter",
            (
                (_labels(model=name, result="ok"), _counted(times, _zero_crossings(result, m)))
                for m, name in enumerate(result.models)
            ),
        )
    if result.holds_requests:
        _activator(out, result, times)
    out.lines.extend(engine_metrics.render_lines(result, EPOCH))
    out.lines.append("# EOF")
    return "\n".join(out.lines) + "\n"


def write(result: SimulationResult, path: Path) -> None:
    """Write the OpenMetrics text of `result` to `path`."""
    path.write_text(render(result), encoding="utf-8")


def _latest(
    times: list[float], decisions: list[Decision], value: Callable[[Decision], float]
) -> np.ndarray:
    """At each time, `value(decision)` of the latest decision made at or before it (NaN before)."""
    stamps = np.array([d.time for d in decisions])
    values = np.array([value(d) for d in decisions], dtype=np.float64)
    index = np.searchsorted(stamps, np.asarray(times), side="right") - 1
    out = np.full(len(times), math.nan)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


def _finite(times: list[float], values: np.ndarray) -> list[tuple[float, float]]:
    return [(t, v) for t, v in zip(times, values.tolist(), strict=True) if math.isfinite(v)]


def _reason_counts(
    times: list[float], decisions: list[Decision]
) -> dict[str, list[tuple[float, float]]]:
    """Per reason, the cumulative count of decisions carrying it, sampled at `times`."""
    counts: Counter[str] = Counter()
    series: dict[str, list[tuple[float, float]]] = {}
    reasons = sorted({r.value for d in decisions for r in d.reasons})
    i = 0
    for t in times:
        while i < len(decisions) and decisions[i].time <= t:
            counts.update(r.value for r in decisions[i].reasons)
            i += 1
        for reason in reasons:
            series.setdefault(reason, []).append((t, float(counts[reason])))
    return series


def _wakes(result: SimulationResult, model: int, times: list[float]) -> list[float]:
    """Cumulative scale-ups from zero of `model`, sampled at `times`."""
    wakes: list[float] = []
    current = result.policies[model].replicas.min
    for t, m, replicas in result.spec_changes:
        if m != model:
            continue
        if current == 0 and replicas > 0:
            wakes.append(t)
        current = replicas
    stamps = np.asarray(wakes)
    counts = np.searchsorted(stamps, np.asarray(times), side="right")
    return [float(c) for c in counts]


def _counted(times: list[float], events: list[float]) -> list[tuple[float, float]]:
    """A counter of the `events` (their times), sampled at `times`."""
    counts = np.searchsorted(np.sort(np.asarray(events)), np.asarray(times), side="right")
    return [(t, float(c)) for t, c in zip(times, counts.tolist(), strict=True)]


def _zero_crossings(result: SimulationResult, model: int) -> list[float]:
    """Times of `model`'s spec.replicas writes to or from zero."""
    crossings: list[float] = []
    current = result.policies[model].replicas.min
    for t, m, replicas in result.spec_changes:
        if m != model:
            continue
        if (current == 0) != (replicas == 0):
            crossings.append(t)
        current = replicas
    return crossings


def _cold_starts(result: SimulationResult, model: int) -> list[tuple[float, float]]:
    """(ready time, seconds since the write off zero) of each cold start of `model`.

    As the live adapter tracks them: a write off zero starts the clock (a later one restarts
    it), the next pod to become Ready stops it.
    """
    events: list[tuple[float, int, float]] = []  # (time, 0 = ready / 1 = write, ...)
    current = result.policies[model].replicas.min
    for t, m, replicas in result.spec_changes:
        if m == model:
            if current == 0 and replicas > 0:
                events.append((t, 1, t))
            current = replicas
    events.extend(
        (p.ready, 0, p.ready)
        for p in result.pods
        if p.model == model and not p.warm and math.isfinite(p.ready)
    )
    observed: list[tuple[float, float]] = []
    began: float | None = None
    # A pod Ready at a write's instant was asked for earlier: ready events sort first.
    for t, kind, _ in sorted(events):
        if kind == 1:
            began = t
        elif began is not None:
            observed.append((t, t - began))
            began = None
    return observed


def _activator(out: _Writer, result: SimulationResult, times: list[float]) -> None:
    """The activator's series of a run whose request path held requests at zero."""
    # Held requests still waiting at the end are dropped then: one more sample shows them.
    ends = [*times, result.duration] if not times or result.duration > times[-1] else times
    models = range(len(result.models))
    pending = [np.where(s.ready == 0, s.queue, 0) for s in result.series]
    started = np.isfinite(result.start)
    # The activator forwards a request on arrival when a replica is Ready (the engine may
    # then queue it), and a held one when the first replica becomes Ready (its start).
    forwarded_at = np.where(result.held, result.start, result.arrival)
    forwarded = [forwarded_at[(result.model == m) & started].tolist() for m in models]
    gave_up = [
        [result.duration] * int(np.sum((result.model == m) & result.held & ~started))
        for m in models
    ]
    waits = []
    for m in models:
        chosen = (result.model == m) & result.held & started
        stamps = result.start[chosen]
        waits.append(
            list(zip(stamps.tolist(), (stamps - result.arrival[chosen]).tolist(), strict=True))
        )
    out.family(
        metric_names.ACTIVATOR_PENDING,
        "gauge",
        (
            (_labels(model=name), zip(times, pending[m].tolist(), strict=True))
            for m, name in enumerate(result.models)
        ),
    )
    out.histogram(
        metric_names.ACTIVATOR_WAIT,
        ACTIVATOR_WAIT_BUCKETS,
        ((name, times, waits[m]) for m, name in enumerate(result.models)),
    )
    out.family(
        metric_names.ACTIVATOR_FORWARDED,
        "counter",
        (
            (_labels(model=name), _counted(ends, forwarded[m]))
            for m, name in enumerate(result.models)
        ),
    )
    out.family(
        metric_names.ACTIVATOR_TIMEOUTS,
        "counter",
        ((_labels(model=name), _counted(ends, gave_up[m])) for m, name in enumerate(result.models)),
    )
    out.family(
        metric_names.ACTIVATOR_REJECTED,
        "counter",
        (
            (_labels(model=name, reason="timeout"), _counted(ends, gave_up[m]))
            for m, name in enumerate(result.models)
        ),
    )
