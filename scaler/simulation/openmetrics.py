"""Export a simulation as OpenMetrics text, under the metric names the live adapter exports.

Backfilled with ``promtool tsdb create-blocks-from openmetrics FILE DIR``, a simulated run
shows on the same Grafana dashboards as the cluster. Samples are taken at every simulated
Prometheus scrape; timestamps are seconds, virtual time 0 being `EPOCH` (a fixed instant,
so two exports of one run are identical). The file ends with ``# EOF`` as promtool needs.

Series (label ``model`` on each; names from ``scaler.api.metric_names``): desired, current
(``spec.replicas``), ready and starting replicas; the signal values the autoscaler saw and
the policy's per-replica targets (label ``signal``); cold starts (scale-ups from zero,
counter). For the ``scaler`` policy also the decisions by reason (counter, label
``reason``) and the placement cap; other policies have no decision record, and their
desired replicas are the ``spec.replicas`` they wrote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from scaler.api import metric_names
from scaler.core import Decision, Signal
from scaler.simulation.engine import SimulationResult

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
