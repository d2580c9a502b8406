"""Metrics sources: the Prometheus source and the engine signal templates it queries.

`PrometheusSource.read(policies)` returns a `SourceReading` (a `ModelReading` per model and a
`QueryStat` per query); `replica_counts(policies)` serves ``--no-kubernetes`` mode. The
templates, their placeholders and the batching rule are in `scaler.sources.templates` and
docs/metrics.md, "Prometheus queries".
"""

from scaler.sources.prometheus import (
    ModelReading,
    PrometheusSource,
    QueryStat,
    ReplicaCount,
    SourceReading,
)
from scaler.sources.templates import (
    DEFAULT_TEMPLATES,
    PLACEHOLDERS,
    PlannedQuery,
    SignalTemplate,
    plan_queries,
    render,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "PLACEHOLDERS",
    "ModelReading",
    "PlannedQuery",
    "PrometheusSource",
    "QueryStat",
    "ReplicaCount",
    "SignalTemplate",
    "SourceReading",
    "plan_queries",
    "render",
]
