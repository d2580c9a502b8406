"""The simulation report: per-model and total figures of one run, as JSON and as a table.

The JSON shape is a contract (docs/formats.md, "Simulation report"); `SimulationReport.to_json`
emits exactly those keys. Definitions:

- ``requests`` arrived; ``served`` completed; ``dropped`` refused at zero replicas (hpa,
  keda), cut off when the last replica went, or still unfinished at the end of the run;
- ``slo_attainment``: the fraction of *all* requests (dropped ones count as misses) served
  with a queue wait at most the policy's ``slo.queueWaitSeconds``; 1.0 without requests
  (the table shows "-");
- ``slo_wait_s``, the one wait percentile the SLO is judged by (the table's and the HTML's
  "SLO wait"): the queue wait at the policy's ``slo.percentile`` (``slo_percentile``), by
  nearest rank over *all* the model's requests, a dropped request counting as an endless
  wait. It is at most ``slo_threshold_s`` (``slo.queueWaitSeconds``) exactly when
  ``slo_attainment`` reaches ``slo_percentile`` / 100. ``null`` without requests, and when
  the request at that rank was dropped (the table shows "inf"; strict JSON has no Infinity).
  The three are ``null`` in ``total`` (each model has its own SLO);
- ``queue_wait_s``: arrival to the start of service (includes waiting for a cold start), over
  *served* requests only, interpolated percentiles (a distribution of the waits of what was
  served, not the SLO's measure); ``ttft_s``: queue wait + prefill + one decode step, over
  served requests. Percentiles are ``null`` when nothing was served;
- ``replica_seconds``: time pods held memory on a node (loading, ready or draining);
  ``gib_hours``: the same weighted by the pod's memory request, the cost measure;
- ``cold_starts``: pods that loaded the model (the warm replicas the run starts with do
  not count); ``scale_events``: changes of
  ``spec.replicas``; ``max_replicas``: the highest ``spec.replicas``; ``unplaceable_s``:
  pod-seconds spent Pending because no node had room.

In ``total``, counts and costs are sums, percentiles are over all requests pooled,
``slo_attainment`` counts each request against its own model's threshold, and
``max_replicas`` is the peak of the models' summed ``spec.replicas``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from scaler.core import JsonValue
from scaler.simulation.engine import SERVED, SimulationResult
from scaler.simulation.tables import Column, Row, fitted_table
from scaler.simulation.traces import FloatArray


@dataclass(frozen=True)
class ModelReport:
    """One model's (or the total's) figures; field names are the JSON keys."""

    requests: int
    served: int
    dropped: int
    slo_attainment: float
    queue_wait_s: Mapping[str, float | None]  # p50, p95, p99, max
    ttft_s: Mapping[str, float | None]  # p50, p95, p99
    replica_seconds: float
    gib_hours: float
    cold_starts: int
    scale_events: int
    max_replicas: int
    unplaceable_s: float
    slo_wait_s: float | None  # the wait at slo_percentile (see the module docstring)
    slo_threshold_s: float | None  # the policy's slo.queueWaitSeconds
    slo_percentile: float | None  # the policy's slo.percentile

    def to_json(self) -> dict[str, JsonValue]:
        """The contract keys, in contract order."""
        return {
            "requests": self.requests,
            "served": self.served,
            "dropped": self.dropped,
            "slo_attainment": self.slo_attainment,
            "queue_wait_s": dict(self.queue_wait_s),
            "ttft_s": dict(self.ttft_s),
            "replica_seconds": self.replica_seconds,
            "gib_hours": self.gib_hours,
            "cold_starts": self.cold_starts,
            "scale_events": self.scale_events,
            "max_replicas": self.max_replicas,
            "unplaceable_s": self.unplaceable_s,
            "slo_percentile": self.slo_percentile,
            "slo_threshold_s": self.slo_threshold_s,
            "slo_wait_s": (
                None if self.slo_wait_s is None or math.isinf(self.slo_wait_s) else self.slo_wait_s
            ),
        }

    def to_record(self) -> dict[str, JsonValue]:
        """Every field, for `from_record`: the lossless form shard files carry (an endless
        SLO wait stays infinite there; strict JSON has no Infinity, so `to_json` says null)."""
        return {**self.to_json(), "slo_wait_s": self.slo_wait_s}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelReport:
        """The report `to_record` wrote; KeyError, TypeError or ValueError when malformed."""
        return cls(
            requests=int(record["requests"]),
            served=int(record["served"]),
            dropped=int(record["dropped"]),
            slo_attainment=float(record["slo_attainment"]),
            queue_wait_s=_optional_floats(record["queue_wait_s"]),
            ttft_s=_optional_floats(record["ttft_s"]),
            replica_seconds=float(record["replica_seconds"]),
            gib_hours=float(record["gib_hours"]),
            cold_starts=int(record["cold_starts"]),
            scale_events=int(record["scale_events"]),
            max_replicas=int(record["max_replicas"]),
            unplaceable_s=float(record["unplaceable_s"]),
            slo_wait_s=_optional_float(record["slo_wait_s"]),
            slo_threshold_s=_optional_float(record["slo_threshold_s"]),
            slo_percentile=_optional_float(record["slo_percentile"]),
        )


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _optional_floats(value: object) -> dict[str, float | None]:
    if not isinstance(value, dict):
        raise TypeError(f"{value!r} is not an object of percentiles")
    return {str(k): _optional_float(v) for k, v in value.items()}


@dataclass(frozen=True)
class SimulationReport:
    """A run's report: the contract of ``scaler simulate --json``."""

    scenario: str
    policy: str
    duration_s: float
    wall_s: float
    models: Mapping[str, ModelReport]
    total: ModelReport

    def to_json(self) -> dict[str, JsonValue]:
        """Exactly the keys of docs/formats.md "Simulation report"."""
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "duration_s": self.duration_s,
            "wall_s": self.wall_s,
            "models": {name: m.to_json() for name, m in self.models.items()},
            "total": self.total.to_json(),
        }

    def to_record(self) -> dict[str, JsonValue]:
        """`to_json` with every model's full record (see `ModelReport.to_record`)."""
        return {
            **self.to_json(),
            "models": {name: m.to_record() for name, m in self.models.items()},
            "total": self.total.to_record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SimulationReport:
        """The report `to_record` wrote; KeyError, TypeError or ValueError when malformed."""
        models = record["models"]
        if not isinstance(models, dict):
            raise TypeError("models: not an object")
        return cls(
            scenario=str(record["scenario"]),
            policy=str(record["policy"]),
            duration_s=float(record["duration_s"]),
            wall_s=float(record["wall_s"]),
            models={str(name): ModelReport.from_record(m) for name, m in models.items()},
            total=ModelReport.from_record(record["total"]),
        )


def _percentiles(values: FloatArray, keys: Sequence[str]) -> dict[str, float | None]:
    if len(values) == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {}
    for key in keys:
        q = 100.0 if key == "max" else float(key[1:])
        out[key] = round(float(np.percentile(values, q)), 6)
    return out


def _policy_percentile(waits: FloatArray, served: np.ndarray, percentile: float) -> float | None:
    """The policy's percentile of the wait, a dropped request counting as an endless wait."""
    if len(waits) == 0:
        return None
    ranked = np.sort(np.where(served, waits, np.inf))
    # Nearest rank (no interpolation: interpolating towards an endless wait is meaningless).
    index = min(len(ranked) - 1, max(0, math.ceil(percentile / 100.0 * len(ranked)) - 1))
    return float(ranked[index])


def build_report(result: SimulationResult) -> SimulationReport:
    """The report of one run."""
    horizon = result.duration
    wait = result.start - result.arrival
    served_mask = result.status == SERVED
    thresholds = np.array([p.slo.queue_wait_seconds for p in result.policies])
    met = served_mask & (wait <= thresholds[result.model] + 1e-9) if len(wait) else served_mask
    replica_s = [0.0] * len(result.models)
    cold = [0] * len(result.models)
    pending_s = [0.0] * len(result.models)
    for pod in result.pods:
        end = horizon if math.isnan(pod.ended) else min(pod.ended, horizon)
        if not math.isnan(pod.placed):
            replica_s[pod.model] += max(0.0, end - pod.placed)
            cold[pod.model] += 0 if pod.warm else 1
        waited_until = end if math.isnan(pod.placed) else pod.placed
        pending_s[pod.model] += max(0.0, waited_until - pod.created)
    events = [0] * len(result.models)
    highest = list(result.initial_replicas)
    for _, m, replicas in result.spec_changes:
        events[m] += 1
        highest[m] = max(highest[m], replicas)

    models: dict[str, ModelReport] = {}
    for m, name in enumerate(result.models):
        mine = result.model == m
        policy = result.policies[m]
        served = served_mask[mine]
        waits = wait[mine]
        models[name] = ModelReport(
            requests=int(np.count_nonzero(mine)),
            served=int(np.count_nonzero(served)),
            dropped=int(np.count_nonzero(~served)),
            slo_attainment=_fraction(met[mine]),
            queue_wait_s=_percentiles(waits[served], ("p50", "p95", "p99", "max")),
            ttft_s=_percentiles(result.ttft[mine][served], ("p50", "p95", "p99")),
            replica_seconds=round(replica_s[m], 3),
            gib_hours=round(replica_s[m] * result.memory_gib[m] / 3600.0, 4),
            cold_starts=cold[m],
            scale_events=events[m],
            max_replicas=highest[m],
            unplaceable_s=round(pending_s[m], 3),
            slo_wait_s=_policy_percentile(waits, served, policy.slo.percentile),
            slo_threshold_s=policy.slo.queue_wait_seconds,
            slo_percentile=policy.slo.percentile,
        )
    total = ModelReport(
        requests=len(wait),
        served=int(np.count_nonzero(served_mask)),
        dropped=int(np.count_nonzero(~served_mask)),
        slo_attainment=_fraction(met),
        queue_wait_s=_percentiles(wait[served_mask], ("p50", "p95", "p99", "max")),
        ttft_s=_percentiles(result.ttft[served_mask], ("p50", "p95", "p99")),
        replica_seconds=round(sum(replica_s), 3),
        gib_hours=round(sum(m.gib_hours for m in models.values()), 4),
        cold_starts=sum(cold),
        scale_events=sum(events),
        max_replicas=_peak_total(result),
        unplaceable_s=round(sum(pending_s), 3),
        slo_wait_s=None,
        slo_threshold_s=None,
        slo_percentile=None,
    )
    return SimulationReport(
        scenario=result.scenario,
        policy=result.policy,
        duration_s=round(horizon, 3),
        wall_s=round(result.wall_seconds, 3),
        models=models,
        total=total,
    )


def _fraction(mask: np.ndarray) -> float:
    return round(float(np.mean(mask)), 6) if len(mask) else 1.0


def _peak_total(result: SimulationResult) -> int:
    """The highest sum of spec.replicas over the models at any instant."""
    spec = list(result.initial_replicas)
    peak = sum(spec)
    for _, m, replicas in result.spec_changes:
        spec[m] = replicas
        peak = max(peak, sum(spec))
    return peak


def reports_json(reports: Sequence[SimulationReport]) -> JsonValue:
    """``--json`` content: the report object for one policy, a list of them for several."""
    if len(reports) == 1:
        return reports[0].to_json()
    return [r.to_json() for r in reports]


SLO_WAIT_CAPTION = (
    "SLO wait: the queue wait at the model's SLO percentile (under its name), nearest rank "
    "over all requests, a dropped one counting as inf"
)
SUMMARY_COLUMNS = (
    Column("model", "left"),
    Column("policy", "left"),
    Column("requests"),
    Column("served", optional=4),
    Column("dropped"),
    Column("SLO\natt."),
    Column("SLO\nwait"),
    Column("TTFT p95\n(served)", optional=2),
    Column("GiB-h"),
    Column("cold\nstarts", optional=5),
    Column("scale\nevents", optional=1),
    Column("max\nrepl.", optional=3),
    Column("unplace-\nable s", optional=0, label="unplaceable s"),
)


def summary_table(reports: Sequence[SimulationReport], *, width: int | None = None) -> Table:
    """The terminal summary: one row per model and policy, then the totals; columns of
    lesser use are left out to fit `width` (None: all)."""
    rows: list[Row] = []
    models = list(reports[0].models) if reports else []
    for name in [*models, "total"]:
        for i, report in enumerate(reports):
            figures = report.total if name == "total" else report.models[name]
            rows.append(
                Row(
                    [
                        _model_cell(name, figures, i, len(reports)),
                        report.policy,
                        str(figures.requests),
                        str(figures.served),
                        str(figures.dropped),
                        "-" if figures.requests == 0 else f"{figures.slo_attainment:.3f}",
                        _seconds(figures.slo_wait_s) if figures.slo_percentile is not None else "",
                        _seconds(figures.ttft_s.get("p95")),
                        f"{figures.gib_hours:.1f}",
                        str(figures.cold_starts),
                        str(figures.scale_events),
                        str(figures.max_replicas),
                        f"{figures.unplaceable_s:.0f}",
                    ],
                    end_section=i == len(reports) - 1,
                )
            )
    return fitted_table(
        SUMMARY_COLUMNS,
        rows,
        width=width,
        title=f"scenario {reports[0].scenario}" if reports else None,
        caption=SLO_WAIT_CAPTION,
    )


def _model_cell(name: str, figures: ModelReport, row: int, rows: int) -> str:
    """The model's name on its first row, its SLO (percentile and threshold) on the second
    (below the name when the model has one row)."""
    label = slo_label(figures)
    if row == 0:
        return f"{name}\n{label}" if rows == 1 and label else name
    return label if row == 1 else ""


def slo_label(figures: ModelReport) -> str:
    """The policy's SLO as "p99.5 ≤ 10s"; "" for the total (each model has its own)."""
    if figures.slo_threshold_s is None or figures.slo_percentile is None:
        return ""
    return f"p{figures.slo_percentile:g} ≤ {figures.slo_threshold_s:g}s"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}s"
