"""DecisionStore: the latest decision per model and a bounded history, in memory.

The control loop is the only writer; the external metrics API, /metrics and
/debug/decisions only read. A request therefore never waits on Prometheus: it reads what the
last tick left here.

Freshness: a value is served while the last decision made on real data is younger than the
staleness limit. After that the API answers 503 so the HPA holds, except for
``scaler-desired-replicas`` when the policy's fallback is in force (the decision then carries
``Reason.FALLBACK``), which is served like KEDA serves its fallback replicas.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from scaler.api.metric_names import EXTERNAL_BY_SIGNAL, EXTERNAL_DESIRED_REPLICAS
from scaler.core import Decision, Reason

_SIGNAL_BY_METRIC = {name: signal for signal, name in EXTERNAL_BY_SIGNAL.items()}


class UnknownMetricError(LookupError):
    """The metric name or the model is not one scaler serves (HTTP 404)."""


class StaleMetricError(LookupError):
    """The value exists but is older than the staleness limit, or not read yet (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One external metric value, the time it describes, and until when it may be served.

    `fresh_until` is the last instant at which ``value()`` gives this same answer if nothing
    is published meanwhile (infinite for a fallback, which lasts until the next decision);
    the API server caches response bodies with it.
    """

    value: float
    timestamp: float
    fresh_until: float = math.inf


class DecisionStore:
    """Latest decision per model plus the last one made on real data, and a bounded history."""

    def __init__(
        self, models: Iterable[str], *, staleness_seconds: float, history: int = 512
    ) -> None:
        self._models = tuple(sorted(models))
        self._staleness = staleness_seconds
        self._latest: dict[str, Decision] = {}
        self._last_good: dict[str, Decision] = {}
        self._history: deque[Decision] = deque(maxlen=history)
        self._version = 0

    @property
    def version(self) -> int:
        """Changes on every publish: an answer computed at one version holds until the next."""
        return self._version

    @property
    def models(self) -> tuple[str, ...]:
        """The models scaler has policies for (sorted)."""
        return self._models

    def publish(self, decision: Decision) -> None:
        """Record one decision; a decision made on data also becomes the last good one."""
        if decision.model not in self._models:
            raise UnknownMetricError(f"no policy for model {decision.model!r}")
        self._latest[decision.model] = decision
        if decision.demand is not None:
            self._last_good[decision.model] = decision
        self._history.append(decision)
        self._version += 1

    def latest(self, model: str) -> Decision | None:
        """The newest decision for `model`, None before the first tick."""
        return self._latest.get(model)

    def latest_on_data(self, model: str) -> Decision | None:
        """The newest decision for `model` made on real data (what freshness is judged by)."""
        return self._last_good.get(model)

    @property
    def staleness_seconds(self) -> float:
        """How long the last decision made on data stays fresh."""
        return self._staleness

    def recent(self, limit: int | None = None) -> list[Decision]:
        """The newest decisions first, at most `limit` of them."""
        items = list(reversed(self._history))
        return items if limit is None else items[:limit]

    def value(self, metric: str, model: str, now: float) -> MetricValue:
        """The value of external `metric` for `model` at `now`, or Unknown/Stale errors."""
        metric = metric.lower()  # the HPA's client lowercases metric names in the URL
        if metric != EXTERNAL_DESIRED_REPLICAS and metric not in _SIGNAL_BY_METRIC:
            raise UnknownMetricError(f"the server could not find the metric {metric}")
        if model not in self._models:
            raise UnknownMetricError(
                f"the server could not find the metric {metric} for model {model}"
            )
        good = self._last_good.get(model)
        # One deadline for both the check and fresh_until, so a cached answer (served while
        # now <= fresh_until) turns stale at exactly the instant value() does.
        deadline = -math.inf if good is None else good.time + self._staleness
        fresh = now <= deadline
        if metric == EXTERNAL_DESIRED_REPLICAS:
            latest = self._latest.get(model)
            if fresh and latest is not None:
                return MetricValue(float(latest.desired_replicas), latest.time, deadline)
            if latest is not None and Reason.FALLBACK in latest.reasons:
                return MetricValue(float(latest.desired_replicas), latest.time)
            raise StaleMetricError(f"no fresh data for model {model}")
        if not fresh or good is None:
            raise StaleMetricError(f"no fresh data for model {model}")
        signal = _SIGNAL_BY_METRIC[metric]
        if signal not in good.signals:
            raise StaleMetricError(f"signal {signal.value} not read for model {model}")
        return MetricValue(good.signals[signal], good.time, deadline)
