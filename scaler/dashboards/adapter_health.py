"""Adapter health: is scaler itself working?

The control loop (which replica leads, when it last ticked, how old its data is), its
Prometheus queries (latency and errors by signal), the external metrics API the HPAs read
(latency and status codes) and the activator.
"""

from __future__ import annotations

from scaler import metric_names as names
from scaler.dashboards import queries as q
from scaler.dashboards.panels import Query, datasource_variable, graph, single_stat
from scaler.dashboards.sdk import Dashboard, DashboardModel, Row

UID = "scaler-adapter-health"
"""Stable dashboard uid: links and bookmarks survive re-imports."""

_ALL = 'model=~".+"'


def _loop_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("Control loop"))
    panels = [
        single_stat(
            "Adapter replicas reporting",
            [Query(f"count({names.LEADER})")],
            description="Adapter replicas Prometheus scrapes (2 expected).",
        ),
        single_stat(
            "Leaders",
            [Query(f"sum({names.LEADER})")],
            description="Replicas holding the Lease: exactly 1, or nothing is actuated.",
        ),
        single_stat(
            "Since the last tick",
            [Query(f"time() - max({names.LAST_TICK})")],
            unit="s",
            description="Seconds since the freshest replica finished a control tick.",
        ),
        single_stat(
            "Oldest model data",
            [Query(f"max({names.DATA_AGE})")],
            unit="s",
            description="Age of the stalest model's newest sample.",
        ),
        graph(
            "Leader by replica",
            [Query(f"max by (instance) ({names.LEADER})", "{{instance}}")],
        ),
        graph(
            "Age of the newest sample by model",
            [Query(q.model_gauge(names.DATA_AGE, _ALL), "{{model}}")],
            unit="s",
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def _prometheus_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("Prometheus queries"))
    dashboard = dashboard.with_panel(
        graph(
            "Query latency by signal",
            [
                Query(q.query_latency_quantile(0.5), "{{signal}} p50"),
                Query(q.query_latency_quantile(0.95), "{{signal}} p95"),
            ],
            unit="s",
        )
    )
    return dashboard.with_panel(
        graph(
            "Query errors by signal",
            [Query(q.query_error_ratio(), "{{signal}}")],
            unit="percentunit",
            description="Failed share of the queries. A model whose queries fail holds its "
            "replicas (never scales down on missing data).",
        )
    )


def _api_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("External metrics API"))
    dashboard = dashboard.with_panel(
        graph(
            "API latency (p95) by route and code",
            [Query(q.api_latency_quantile(0.95), "{{path}} {{code}}")],
            unit="s",
        )
    )
    return dashboard.with_panel(
        graph(
            "API requests by code",
            [Query(q.api_requests_by_code(), "{{code}}")],
            unit="reqps",
            description="503 means stale data (the HPA holds); 404 an unknown metric or "
            "model; 401/403 an unauthenticated or unauthorized caller.",
            stacked=True,
        )
    )


def _activator_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("Activator"))
    panels = [
        graph("Requests held by model", [Query(q.activator_pending(_ALL), "{{model}}")], width=8),
        graph(
            "Hold time p95 by model",
            [Query(q.activator_wait_quantile(0.95, _ALL), "{{model}}")],
            unit="s",
            width=8,
        ),
        graph(
            "Forwarded, timed out, rejected",
            [
                Query(q.activator_rate(names.ACTIVATOR_FORWARDED, _ALL), "{{model}} forwarded"),
                Query(q.activator_rate(names.ACTIVATOR_TIMEOUTS, _ALL), "{{model}} timed out"),
                Query(q.activator_rate(names.ACTIVATOR_REJECTED, _ALL), "{{model}} rejected"),
            ],
            unit="reqps",
            width=8,
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def build() -> DashboardModel:
    """The adapter health dashboard."""
    dashboard = (
        Dashboard("scaler / adapter health")
        .uid(UID)
        .description("scaler itself: control loop, Prometheus queries, API, activator.")
        .tags(["scaler", "autoscaling"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(datasource_variable())
    )
    for row in (_loop_row, _prometheus_row, _api_row, _activator_row):
        dashboard = row(dashboard)
    return dashboard.build()
