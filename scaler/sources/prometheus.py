"""PrometheusSource: reads every model's signals from Prometheus, a few queries per tick.

One `read()` sends one query per (engine, signal) for all batchable policies (see
scaler.sources.templates for the templates and the batching rule), concurrently, each bounded
by `timeout`, and returns per-model readings plus one `QueryStat` per query. It never raises
for Prometheus' sake: a failed, slow or refused query is an error in its QueryStat, and the
signals it would have given are missing.

Missing is not zero. A model with no series for a signal (no pod yet, no scrape, a NaN, +Inf,
negative or unparseable value) has that signal absent from its reading; the decision core
then holds instead of scaling down. A model known to be scaled to zero is not special here:
its engine signals are missing (there are no pods), while the activator's pending count, when
the activator runs, still gives it a queue depth and in-flight value. The control loop knows
the model is at zero (replicas) and decides on that; the source only reports what Prometheus
has.

Queries go straight to ``/api/v1/query`` over aiohttp, at most `max_concurrent_queries` at a
time, with no retries (the next tick retries). Each one has a *total* deadline, `timeout`,
covering connect, headers and body: a proxy trickling one byte every half second cannot keep
a query (and the tick behind it) alive, and nothing outlives the deadline, so the source is
healthy again as soon as Prometheus is. (The former requests-based client had a per-read
timeout only: a trickle held all eight worker threads for minutes.) The answer is read up to
`max_response_bytes` and must hold at most `max_series` series; a larger one is a failed
query whose error says which limit it broke, and nothing of it is parsed or kept.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import aiohttp
import structlog

from scaler.core import Engine, ModelPolicy, Signal
from scaler.metric_names import ACTIVATOR_PENDING, MODEL_LABEL
from scaler.sources.templates import (
    SERIES_LABEL,
    PlannedQuery,
    check_window,
    common_matchers,
    model_matcher,
    parse_matcher,
    plan_queries,
)

log = structlog.get_logger("scaler.sources")

KSM_SPEC_REPLICAS = "kube_deployment_spec_replicas"
KSM_READY_REPLICAS = "kube_deployment_status_replicas_ready"
_ERROR_CHARS = 300  # requests' connection errors run to a screenful; keep the gist
_OBJECT_PREFIX = re.compile(r"^<[^>]+ object at 0x[0-9a-f]+>: ")

MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
"""Largest query answer read. A batched answer has about two series per model (value and
sample time, ~300 bytes each): 4 MiB is room for thousands of models."""

MAX_SERIES: Final = 10_000
"""Most series one answer may hold (an over-broad override could select every pod's)."""


class ReplicaCountsUnavailableError(Exception):
    """Every replica-count query failed; the message carries their errors."""


class QueryError(Exception):
    """A query that did not give an instant vector; the message is the QueryStat's error."""


@dataclass(frozen=True)
class ModelReading:
    """One model's signals at one tick: present signals only; `sample_time` is the newest
    sample timestamp (Unix seconds) among its series, None when no query gave one."""

    signals: Mapping[Signal, float]
    sample_time: float | None


@dataclass(frozen=True)
class QueryStat:
    """One query sent (or not: a template that did not render) during a read.

    `error` is None on success; otherwise a one-line reason (timeout, HTTP status with
    Prometheus' message, connection refused...). `query` is the PromQL sent.
    """

    signal: Signal
    engine: Engine
    duration_seconds: float
    error: str | None
    query: str = ""


@dataclass(frozen=True)
class SourceReading:
    """The result of one `read()`: a reading for every policy's model, and the query stats."""

    models: Mapping[str, ModelReading]
    queries: tuple[QueryStat, ...]


@dataclass(frozen=True)
class ReplicaCount:
    """Replicas of a model as Prometheus sees them (for ``--no-kubernetes``)."""

    current: int
    ready: int


@dataclass(frozen=True)
class _Series:
    """One parsed result series; `value` is None when it was not a number."""

    labels: Mapping[str, str]
    value: float | None


class PrometheusSource:
    """Reads model signals (and, without Kubernetes, replica counts) from Prometheus.

    `window` is the rate window (a PromQL duration, at least 4× the scrape interval);
    `timeout` bounds each query in seconds; `model_label` is the label naming the model on
    the series. Close it (or use ``async with``) to stop its query threads.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout: float = 3.0,
        window: str = "1m",
        model_label: str = MODEL_LABEL,
        max_concurrent_queries: int = 8,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_series: int = MAX_SERIES,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.window = check_window(window)
        self.model_label = model_label
        self.max_response_bytes = max_response_bytes
        self.max_series = max_series
        self._max_concurrent = max_concurrent_queries
        self._session: aiohttp.ClientSession | None = None  # made in the loop, on first use

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections to Prometheus."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrent),
                # Total: connect, waiting in the pool, headers and body all count.
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    # --- signals ---------------------------------------------------------------------------

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """Every policy's model's signals now; never raises for a Prometheus failure."""
        planned = plan_queries(policies, window=self.window, model_label=self.model_label)
        outcomes = await asyncio.gather(*(self._run(q) for q in planned))
        parts: dict[str, dict[Signal, list[float | None]]] = {p.model: {} for p in policies}
        times: dict[str, float] = {}
        for plan, (series, _stat) in zip(planned, outcomes, strict=True):
            for one in series:
                model = self._owner(plan, one.labels)
                if model is None or model not in parts:
                    continue
                if one.labels.get(SERIES_LABEL, "value") == "sample_time":
                    if one.value is not None and math.isfinite(one.value) and one.value > 0:
                        times[model] = max(times.get(model, 0.0), one.value)
                else:
                    parts[model].setdefault(plan.signal, []).append(one.value)
        models = {
            model: ModelReading(
                signals={
                    signal: sum(v for v in values if v is not None)
                    for signal, values in by_signal.items()
                    if values and all(_usable(v) for v in values)
                },
                sample_time=times.get(model),
            )
            for model, by_signal in parts.items()
        }
        return SourceReading(models=models, queries=tuple(stat for _, stat in outcomes))

    def _owner(self, plan: PlannedQuery, labels: Mapping[str, str]) -> str | None:
        """The model a result series belongs to (see PlannedQuery.batched)."""
        if not plan.batched:
            return plan.models[0]
        return labels.get(self.model_label)

    async def _run(self, plan: PlannedQuery) -> tuple[list[_Series], QueryStat]:
        # Debug only: the caller reports failed queries (the loop: one warning per fault, not
        # one per query per tick); the errors travel in the QueryStats.
        if plan.error is not None:
            log.debug("prometheus_query_not_sent", signal=plan.signal.value, error=plan.error)
            return [], QueryStat(plan.signal, plan.engine, 0.0, plan.error, plan.query)
        series, duration, error = await self._query(plan.query)
        if error is not None:
            log.debug(
                "prometheus_query_failed",
                signal=plan.signal.value,
                engine=plan.engine.value,
                error=error,
                seconds=round(duration, 3),
            )
        return series, QueryStat(plan.signal, plan.engine, duration, error, plan.query)

    async def _query(self, query: str) -> tuple[list[_Series], float, str | None]:
        """Run one instant query: (series, seconds taken, error or None)."""
        started = time.perf_counter()
        try:
            # The session's total timeout bounds the request; this one also bounds the
            # parsing, so that no part of a query outlives `timeout`.
            async with asyncio.timeout(self.timeout):
                raw = await self._fetch(query)
                series = _parse(raw, max_series=self.max_series)
        except TimeoutError:
            return [], time.perf_counter() - started, f"timed out after {self.timeout:g}s"
        except QueryError as exc:
            return [], time.perf_counter() - started, str(exc)[:_ERROR_CHARS]
        except Exception as exc:  # anything from aiohttp or the JSON is a failed query
            return [], time.perf_counter() - started, _describe(exc)
        return series, time.perf_counter() - started, None

    async def _fetch(self, query: str) -> object:
        """The ``data.result`` of one answer, its body read up to `max_response_bytes`."""
        params = {"query": query, "timeout": f"{self.timeout:g}s"}  # Prometheus stops too
        async with self._client().get(f"{self.url}/api/v1/query", params=params) as response:
            limit = self.max_response_bytes
            if response.content_length is not None and response.content_length > limit:
                raise QueryError(
                    f"answer of {response.content_length} bytes is over the"
                    f" {limit}-byte limit: not read"
                )
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise QueryError(f"answer is over the {limit}-byte limit: not read")
            if response.status != 200:
                raise QueryError(f"HTTP {response.status}: {_prometheus_error(body)}")
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
            raise QueryError("answer is not a Prometheus API response")
        return document["data"].get("result")

    # --- the activator's held requests (/status) -------------------------------------------

    async def held_requests(self, policies: Sequence[ModelPolicy]) -> Mapping[str, float]:
        """Requests the activator holds now per model (its pending gauge, summed over activator
        replicas); one query. A model without activator series is absent (unknown, not 0).
        Raises QueryError when the query fails."""
        if not policies:
            return {}
        models = sorted({p.model for p in policies})
        selector = model_matcher(self.model_label, models)
        query = f"sum by ({self.model_label}) ({ACTIVATOR_PENDING}{{{selector}}})"
        series, _, error = await self._query(query)
        if error is not None:
            raise QueryError(error)
        counts: dict[str, float] = {}
        for one in series:
            model = one.labels.get(self.model_label)
            if model in models and _usable(one.value):
                assert one.value is not None
                counts[model] = one.value
        return counts

    # --- replicas (--no-kubernetes) --------------------------------------------------------

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        """Current and ready replicas per model, for running without a Kubernetes API.

        From kube-state-metrics (``kube_deployment_spec_replicas`` /
        ``kube_deployment_status_replicas_ready`` for the policy's target Deployment, with the
        ``namespace`` and ``deployment`` labels as KSM exports them, i.e. scraped with
        honor_labels) when present; otherwise the number of scraped targets per model
        (``count by (model)(up{<matchers>})``, ready = those with ``up == 1``). A model whose
        queries succeeded but found nothing has 0 replicas; a model is absent when the
        queries failed (unknown). Two or three queries, whatever the number of models. When
        every query failed, raises `ReplicaCountsUnavailableError` (with their errors), so the
        caller can tell an outage from models that have no count.
        """
        if not policies:
            return {}
        ksm_query = _ksm_query(policies)
        up_plans = _up_queries(policies, self.model_label)
        outcomes = await asyncio.gather(
            self._query(ksm_query), *(self._query(query) for query, _ in up_plans)
        )
        ksm_series, _, ksm_error = outcomes[0]
        if ksm_error is not None:
            log.debug("prometheus_replicas_failed", source="kube-state-metrics", error=ksm_error)
        from_ksm = _ksm_counts(policies, ksm_series) if ksm_error is None else {}

        counts: dict[str, ReplicaCount] = {}
        for (_, members), (series, _, error) in zip(up_plans, outcomes[1:], strict=True):
            if error is not None:
                log.debug("prometheus_replicas_failed", source="up", error=error)
                continue
            counts.update(_up_counts(members, series, self.model_label))
        counts.update(from_ksm)
        errors = [error for _, _, error in outcomes if error is not None]
        if len(errors) == len(outcomes):
            raise ReplicaCountsUnavailableError(
                f"every replica query failed: {'; '.join(sorted(set(errors)))}"[:_ERROR_CHARS]
            )
        return counts


def _describe(exc: BaseException) -> str:
    """One short line for a failed query: the exception type and its root cause.

    requests wraps a refused connection three deep, with the whole query URL in the outer
    message; the innermost reason ("Connection refused") is what an operator needs.
    """
    cause: BaseException = exc
    for _ in range(5):
        inner = getattr(cause, "reason", None)
        if not isinstance(inner, BaseException) and cause.args:
            inner = cause.args[0]
        if not isinstance(inner, BaseException):
            break
        cause = inner
    detail = _OBJECT_PREFIX.sub("", str(cause))
    return f"{type(exc).__name__}: {detail}"[:_ERROR_CHARS]


def _usable(value: float | None) -> bool:
    """A signal value scaler may act on: a finite, non-negative number."""
    return value is not None and math.isfinite(value) and value >= 0


def _prometheus_error(body: bytes | bytearray) -> str:
    """Prometheus' own error text from an error answer, else the start of the body."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return repr(body[:200])


def _parse(raw: object, *, max_series: int) -> list[_Series]:
    """Parse an instant vector's result list; a value that is not a number becomes None."""
    if not isinstance(raw, list):
        raise QueryError(f"expected an instant vector, got {type(raw).__name__}")
    if len(raw) > max_series:
        raise QueryError(f"answer has {len(raw)} series, over the limit of {max_series}")
    series: list[_Series] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
            raise ValueError(f"malformed result item {item!r}"[:_ERROR_CHARS])
        labels = {str(k): str(v) for k, v in item["metric"].items()}
        point = item.get("value")
        value: float | None = None
        if isinstance(point, list) and len(point) == 2:
            try:
                value = float(point[1])
            except (TypeError, ValueError):
                value = None
        series.append(_Series(labels, value))
    return series


def _tag(expr: str, tag: str) -> str:
    return f'label_replace({expr}, "{SERIES_LABEL}", "{tag}", "__name__", ".*")'


def _ksm_query(policies: Sequence[ModelPolicy]) -> str:
    namespaces = "|".join(sorted({p.target.namespace for p in policies}))
    deployments = "|".join(sorted({p.target.deployment for p in policies}))
    # The regexes may over-select (namespace × deployment): exact pairs are picked afterwards.
    selector = f'{{namespace=~"{namespaces}",deployment=~"{deployments}"}}'
    return (
        f"{_tag(f'max by (namespace, deployment) ({KSM_SPEC_REPLICAS}{selector})', 'current')}"
        f" or {_tag(f'max by (namespace, deployment) ({KSM_READY_REPLICAS}{selector})', 'ready')}"
    )


def _ksm_counts(
    policies: Sequence[ModelPolicy], series: Sequence[_Series]
) -> dict[str, ReplicaCount]:
    found: dict[tuple[str, str], dict[str, float]] = {}
    for one in series:
        if one.value is None or not math.isfinite(one.value) or one.value < 0:
            continue
        key = (one.labels.get("namespace", ""), one.labels.get("deployment", ""))
        found.setdefault(key, {})[one.labels.get(SERIES_LABEL, "")] = one.value
    counts: dict[str, ReplicaCount] = {}
    for policy in policies:
        values = found.get((policy.target.namespace, policy.target.deployment), {})
        if "current" in values:
            counts[policy.model] = ReplicaCount(
                current=int(values["current"]), ready=int(values.get("ready", 0))
            )
    return counts


def _up_queries(
    policies: Sequence[ModelPolicy], model_label: str
) -> list[tuple[str, tuple[ModelPolicy, ...]]]:
    """One ``up`` query per distinct set of non-model matchers (one, for the shipped policies),
    batched by the same rule as the signal queries; a policy without a ``model="<its name>"``
    matcher gets its own."""
    groups: dict[tuple[str, ...], list[ModelPolicy]] = {}
    plans: list[tuple[str, tuple[ModelPolicy, ...]]] = []
    for policy in policies:
        common = common_matchers(policy, model_label)
        if common is not None:
            groups.setdefault(common, []).append(policy)
        else:
            matchers = ",".join(str(parse_matcher(m)) for m in policy.matchers)
            plans.append((_up_query(matchers, model_label), (policy,)))
    for common, members in groups.items():
        models = sorted({p.model for p in members})
        matchers = ",".join((*common, model_matcher(model_label, models)))
        plans.append((_up_query(matchers, model_label), tuple(members)))
    return plans


def _up_query(matchers: str, model_label: str) -> str:
    up = f"up{{{matchers}}}"
    return (
        f"{_tag(f'count by ({model_label}) ({up})', 'current')}"
        f" or {_tag(f'count by ({model_label}) ({up} == 1)', 'ready')}"
    )


def _up_counts(
    members: Sequence[ModelPolicy], series: Sequence[_Series], model_label: str
) -> dict[str, ReplicaCount]:
    alone = len(members) == 1
    totals: dict[str, dict[str, float]] = {p.model: {} for p in members}
    for one in series:
        model = members[0].model if alone else one.labels.get(model_label, "")
        if model not in totals or one.value is None or not math.isfinite(one.value):
            continue
        tag = one.labels.get(SERIES_LABEL, "")
        totals[model][tag] = totals[model].get(tag, 0.0) + one.value
    return {
        model: ReplicaCount(current=int(v.get("current", 0)), ready=int(v.get("ready", 0)))
        for model, v in totals.items()
    }
