"""DecisionStore: the latest decision per model, its answers rendered, and a bounded history.

The control loop is the only writer; the external metrics API, /metrics and
/debug/decisions only read. A request therefore never waits on Prometheus: it reads what the
last tick left here.

Publishing is two steps so that the expensive one does not hold the readers up: ``prepare``
(or a ``draft`` filled in as many steps as the writer likes) builds the next ``Snapshot``
(every decision of a tick, and for each of its models the body of each metric's answer,
rendered once here instead of once per request) without changing what readers see;
``commit`` makes it visible in one assignment. Commit on the thread that serves the readers
(the event loop), between two requests: a handler then sees one tick from its first read to
its last, never half of one.

Freshness: a value is served while the last decision made on real data is younger than the
staleness limit. After that the API answers 503 so the HPA holds, except for
``scaler-desired-replicas`` when the policy's fallback is in force (the decision then carries
``Reason.FALLBACK``), which is served like KEDA serves its fallback replicas.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from scaler.api.value_list import render_answer
from scaler.core import Decision, Reason
from scaler.metric_names import EXTERNAL_BY_SIGNAL, EXTERNAL_DESIRED_REPLICAS, EXTERNAL_METRICS

_SIGNAL_BY_METRIC = {name: signal for signal, name in EXTERNAL_BY_SIGNAL.items()}


class UnknownMetricError(LookupError):
    """The metric name or the model is not one scaler serves (HTTP 404)."""


class StaleMetricError(LookupError):
    """The value exists but is older than the staleness limit, or not read yet (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One external metric value, the time it describes, and until when it may be served.

    `fresh_until` is the last instant at which ``value()`` gives this same answer if nothing
    is published meanwhile (infinite for a fallback, which lasts until the next decision).
    """

    value: float
    timestamp: float
    fresh_until: float = math.inf


@dataclass(frozen=True, slots=True)
class RenderedAnswer:
    """The body of the 200 answer for one model and metric, and the last instant it holds.

    The body is the ExternalMetricValueList with that model's single item, as the general
    selector path renders it for ``model=<name>``; past `fresh_until` it is not served.
    """

    body: bytes
    fresh_until: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one publish makes visible at once; readers hold one per request."""

    version: int
    latest: Mapping[str, Decision] = field(default_factory=dict)
    last_good: Mapping[str, Decision] = field(default_factory=dict)
    # model -> metric -> answer, only where a value can be served (the rest is 503 anyway)
    answers: Mapping[str, Mapping[str, RenderedAnswer]] = field(default_factory=dict)
    decisions: Sequence[Decision] = ()  # what this publish added, for the history

    def release(self) -> Iterator[None]:
        """Drop this snapshot's contents a model at a time, yielding after each: for a
        snapshot no reader can reach any more (the one ``commit`` replaced).

        Letting a 1,000-model snapshot go at once frees some 50,000 objects in one C-level
        cascade, milliseconds in which the event loop serves nothing; the caller spreads it
        over slices instead. The snapshot is empty afterwards.
        """
        tables = (self.answers, self.latest, self.last_good)
        for table in (cast(MutableMapping[str, object], t) for t in tables):
            while table:
                table.popitem()
                yield
        if isinstance(self.decisions, list):
            while self.decisions:
                self.decisions.pop()
                yield


def _servable(
    metric: str,
    model: str,
    latest: Mapping[str, Decision],
    last_good: Mapping[str, Decision],
    staleness: float,
) -> MetricValue | None:
    """What `metric` of `model` is and until when it may be served; None if never."""
    good = last_good.get(model)
    deadline = -math.inf if good is None else good.time + staleness
    if metric == EXTERNAL_DESIRED_REPLICAS:
        newest = latest.get(model)
        if newest is None:
            return None
        # The policy's fallback is served until the next decision, however old the data.
        until = math.inf if Reason.FALLBACK in newest.reasons else deadline
        return MetricValue(float(newest.desired_replicas), newest.time, until)
    signal = _SIGNAL_BY_METRIC[metric]
    if good is None or signal not in good.signals:
        return None
    return MetricValue(good.signals[signal], good.time, deadline)


class DecisionStore:
    """Latest decision per model plus the last one made on real data, and a bounded history."""

    def __init__(
        self, models: Iterable[str], *, staleness_seconds: float, history: int = 512
    ) -> None:
        self._models = tuple(sorted(models))
        self._known = frozenset(self._models)
        self._staleness = staleness_seconds
        self._snapshot = Snapshot(version=0)
        self._history: deque[Decision] = deque(maxlen=history)

    @property
    def version(self) -> int:
        """Changes on every publish: an answer computed at one version holds until the next."""
        return self._snapshot.version

    @property
    def models(self) -> tuple[str, ...]:
        """The models scaler has policies for (sorted)."""
        return self._models

    def publish(self, decision: Decision) -> None:
        """Record one decision; a decision made on data also becomes the last good one."""
        self.commit(self.prepare((decision,)))

    def publish_all(self, decisions: Iterable[Decision]) -> None:
        """Record a tick's decisions as one publish (prepare and commit on this thread)."""
        self.commit(self.prepare(decisions))

    def prepare(self, decisions: Iterable[Decision]) -> Snapshot:
        """The snapshot that follows the current one with `decisions` recorded (in order).

        Readers see nothing of it until ``commit``. For a large tick, ``draft`` lets the
        writer do the same work in steps.
        """
        draft = self.draft()
        draft.add(decisions)
        return draft.snapshot()

    def draft(self) -> SnapshotDraft:
        """An empty next snapshot, to fill with ``SnapshotDraft.add`` and then commit."""
        return SnapshotDraft(self._snapshot, self._known, self._staleness)

    def commit(self, snapshot: Snapshot) -> Snapshot:
        """Make `snapshot` (from ``prepare`` or a draft) what every reader sees, at once;
        returns the snapshot it replaces (see ``Snapshot.release``).

        Raises RuntimeError if another publish came in since it was prepared: committing it
        would silently drop that publish's decisions.
        """
        if snapshot.version != self._snapshot.version + 1:
            raise RuntimeError(
                f"snapshot {snapshot.version} was prepared on an outdated store"
                f" (now at {self._snapshot.version})"
            )
        self._history.extend(snapshot.decisions)
        replaced, self._snapshot = self._snapshot, snapshot
        return replaced

    def latest(self, model: str) -> Decision | None:
        """The newest decision for `model`, None before the first tick."""
        return self._snapshot.latest.get(model)

    def latest_on_data(self, model: str) -> Decision | None:
        """The newest decision for `model` made on real data (what freshness is judged by)."""
        return self._snapshot.last_good.get(model)

    @property
    def staleness_seconds(self) -> float:
        """How long the last decision made on data stays fresh."""
        return self._staleness

    def recent(self, limit: int | None = None) -> list[Decision]:
        """The newest decisions first, at most `limit` of them."""
        items = list(reversed(self._history))
        return items if limit is None else items[:limit]

    def answer(self, model: str, metric: str) -> RenderedAnswer | None:
        """The rendered answer for `model` and lowercase `metric`, None where none is servable.

        The caller still checks `fresh_until` against its clock.
        """
        rendered = self._snapshot.answers.get(model)
        return None if rendered is None else rendered.get(metric)

    def value(self, metric: str, model: str, now: float) -> MetricValue:
        """The value of external `metric` for `model` at `now`, or Unknown/Stale errors."""
        metric = metric.lower()  # the HPA's client lowercases metric names in the URL
        if metric != EXTERNAL_DESIRED_REPLICAS and metric not in _SIGNAL_BY_METRIC:
            raise UnknownMetricError(f"the server could not find the metric {metric}")
        if model not in self._known:
            raise UnknownMetricError(
                f"the server could not find the metric {metric} for model {model}"
            )
        snapshot = self._snapshot
        value = _servable(metric, model, snapshot.latest, snapshot.last_good, self._staleness)
        # One bound for the check and for fresh_until, so a rendered answer (served while
        # now <= fresh_until) turns stale at exactly the instant value() does.
        if value is None or now > value.fresh_until:
            raise StaleMetricError(f"no fresh data for {metric} of model {model}")
        return value


class SnapshotDraft:
    """The next snapshot of a store, written in as many steps as the writer likes.

    Each ``add`` records decisions and renders their models' answers; none of it is visible
    to readers until the store commits ``snapshot()``. The control loop adds a slice of a
    tick at a time and lets the event loop serve requests between slices.
    """

    def __init__(self, base: Snapshot, known: frozenset[str], staleness: float) -> None:
        self._version = base.version + 1  # not the base itself: it must be free to go
        self._known = known
        self._staleness = staleness
        self._done = False
        self._latest, self._last_good = dict(base.latest), dict(base.last_good)
        self._answers = dict(base.answers)
        self._decisions: list[Decision] = []

    def add(self, decisions: Iterable[Decision]) -> None:
        """Record `decisions` (in order) and render the answers of their models."""
        if self._done:
            raise RuntimeError("the draft's snapshot was taken: start a new draft")
        batch = tuple(decisions)
        for decision in batch:
            if decision.model not in self._known:
                raise UnknownMetricError(f"no policy for model {decision.model!r}")
            self._latest[decision.model] = decision
            if decision.demand is not None:
                self._last_good[decision.model] = decision
        self._decisions.extend(batch)
        for model in {d.model for d in batch}:
            self._answers[model] = self._render(model)

    def snapshot(self) -> Snapshot:
        """The snapshot holding everything added, for ``DecisionStore.commit``; ends the draft
        (the snapshot takes its tables rather than copies)."""
        self._done = True
        return Snapshot(
            self._version, self._latest, self._last_good, self._answers, self._decisions
        )

    def _render(self, model: str) -> dict[str, RenderedAnswer]:
        answers = {}
        for metric in EXTERNAL_METRICS:
            value = _servable(metric, model, self._latest, self._last_good, self._staleness)
            if value is None or value.fresh_until == -math.inf:
                continue
            body = render_answer(metric, model, value.value, value.timestamp)
            answers[metric] = RenderedAnswer(body, value.fresh_until)
        return answers
