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

prometheus-api-client is synchronous (requests): queries run in a small thread pool owned by
the source (so a slow Prometheus cannot starve the event loop's default executor), each under
both the requests timeout and an `asyncio.wait_for`, with no retries (the next tick retries).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from scaler.core import Engine, ModelPolicy, Signal
from scaler.sources.templates import (
    MODEL_LABEL,
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
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.window = check_window(window)
        self.model_label = model_label
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent_queries, thread_name_prefix="prometheus-query"
        )
        # requests.Session is not documented as thread-safe: one client per worker thread.
        self._clients = threading.local()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the query threads (a query still running finishes within its timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

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
        if plan.error is not None:
            log.warning("prometheus_query_not_sent", signal=plan.signal.value, error=plan.error)
            return [], QueryStat(plan.signal, plan.engine, 0.0, plan.error, plan.query)
        series, duration, error = await self._query(plan.query)
        if error is not None:
            log.warning(
                "prometheus_query_failed",
                signal=plan.signal.value,
                engine=plan.engine.value,
                error=error,
                seconds=round(duration, 3),
            )
        return series, QueryStat(plan.signal, plan.engine, duration, error, plan.query)

    async def _query(self, query: str) -> tuple[list[_Series], float, str | None]:
        """Run one instant query: (series, seconds taken, error or None)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            raw = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._query_sync, query),
                timeout=self.timeout,
            )
            series = _parse(raw)
        except TimeoutError:
            return [], time.perf_counter() - started, f"timed out after {self.timeout:g}s"
        except Exception as exc:  # anything from requests/the client/parsing is a failed query
            return [], time.perf_counter() - started, _describe(exc)
        return series, time.perf_counter() - started, None

    def _query_sync(self, query: str) -> object:
        client: PrometheusConnect | None = getattr(self._clients, "client", None)
        if client is None:
            client = PrometheusConnect(
                url=self.url,
                disable_ssl=True,
                retry=Retry(total=0, raise_on_status=False),
                # A little longer than wait_for's: the asyncio timeout is the one that reports
                # (one clear "timed out"); this one only frees the thread afterwards.
                timeout=self.timeout + 1.0,
            )
            self._clients.client = client
        # Prometheus' own evaluation timeout too, so it stops working on an abandoned query.
        return client.custom_query(query, params={"timeout": str(self.timeout)})

    # --- replicas (--no-kubernetes) --------------------------------------------------------

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        """Current and ready replicas per model, for running without a Kubernetes API.

        From kube-state-metrics (``kube_deployment_spec_replicas`` /
        ``kube_deployment_status_replicas_ready`` for the policy's target Deployment, with the
        ``namespace`` and ``deployment`` labels as KSM exports them, i.e. scraped with
        honor_labels) when present; otherwise the number of scraped targets per model
        (``count by (model)(up{<matchers>})``, ready = those with ``up == 1``). A model whose
        queries succeeded but found nothing has 0 replicas; a model is absent when the
        queries failed (unknown). Two or three queries, whatever the number of models.
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
            log.warning("prometheus_replicas_failed", source="kube-state-metrics", error=ksm_error)
        from_ksm = _ksm_counts(policies, ksm_series) if ksm_error is None else {}

        counts: dict[str, ReplicaCount] = {}
        for (_, members), (series, _, error) in zip(up_plans, outcomes[1:], strict=True):
            if error is not None:
                log.warning("prometheus_replicas_failed", source="up", error=error)
                continue
            counts.update(_up_counts(members, series, self.model_label))
        counts.update(from_ksm)
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


def _parse(raw: object) -> list[_Series]:
    """Parse custom_query's result list; a value that is not a number becomes None."""
    if not isinstance(raw, list):
        raise ValueError(f"expected an instant vector, got {type(raw).__name__}")
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
