"""Policy overview: every model on one page, one repeated row per model.

Read it top-down: the fleet row says how many replicas scaler asks for and how many are
ready; each model row then shows why (the demand of each signal in replicas next to the
decision), what shaped the number (decisions by reason), and what waking the model costs
(cold starts, time to ready, requests held by the activator meanwhile).
"""

from __future__ import annotations

from scaler import metric_names as names
from scaler.core import Signal
from scaler.dashboards import queries as q
from scaler.dashboards.panels import (
    MODEL_MATCHER,
    Query,
    datasource_variable,
    graph,
    model_variable,
    single_stat,
)
from scaler.dashboards.sdk import Dashboard, DashboardModel, Row

UID = "scaler-policy-overview"
"""Stable dashboard uid: links and bookmarks survive re-imports."""

_ALL = 'model=~".+"'


def _fleet_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("Fleet"))
    stats = [
        (
            "Desired replicas",
            f"sum({q.model_gauge(names.DESIRED_REPLICAS, _ALL)})",
            "What scaler asks the HPAs for, all models.",
        ),
        (
            "Ready replicas",
            f"sum({q.model_gauge(names.READY_REPLICAS, _ALL)})",
            "Replicas serving now, all models.",
        ),
        (
            "Models at zero",
            f"count({q.model_gauge(names.CURRENT_REPLICAS, _ALL)} == 0) or vector(0)",
            "On-demand models asleep: their first request waits a cold start.",
        ),
        (
            "Requests held",
            f"sum({q.activator_pending(_ALL)}) or vector(0)",
            "Requests the activator holds while their model wakes.",
        ),
    ]
    for title, expr, description in stats:
        dashboard = dashboard.with_panel(single_stat(title, [Query(expr)], description=description))
    return dashboard.with_panel(
        graph(
            "Desired vs ready replicas",
            [
                Query(q.model_gauge(names.DESIRED_REPLICAS, MODEL_MATCHER), "{{model}} desired"),
                Query(q.model_gauge(names.READY_REPLICAS, MODEL_MATCHER), "{{model}} ready"),
            ],
            width=24,
        )
    )


def _model_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("$model").repeat("model"))
    panels = [
        graph(
            "Replicas: desired, current, ready",
            [
                Query(q.model_gauge(names.DESIRED_REPLICAS, m), "desired"),
                Query(q.model_gauge(names.CURRENT_REPLICAS, m), "current"),
                Query(q.model_gauge(names.READY_REPLICAS, m), "ready"),
                Query(q.model_gauge(names.STARTING_REPLICAS, m), "starting"),
                Query(q.model_gauge(names.PLACEMENT_CAP, m), "placement cap"),
            ],
            description="Desired is scaler's decision (what the HPA follows); current is "
            "spec.replicas; the gap between current and ready is replicas still starting.",
            width=8,
        ),
        graph(
            "Signals against their targets (replicas needed)",
            [
                Query(q.demand_by_signal(m), "{{signal}}"),
                Query(q.model_gauge(names.DESIRED_REPLICAS, m), "desired"),
            ],
            description="Each signal divided by one replica's target: the replicas that "
            "signal asks for. Desired follows the highest, after windows, steps and bounds.",
            width=8,
        ),
        graph(
            "Decisions by reason",
            [Query(q.decisions_by_reason(m), "{{reason}}")],
            description="Which steps shaped the decisions: Demand, StabilizedDown, "
            "ColdStartHold, PlacementCap, BoundedMax, StaleData...",
            width=8,
            stacked=True,
        ),
        single_stat(
            "Cold starts",
            [Query(q.cold_starts(m))],
            description="Scale-ups from zero that became ready in the time range.",
            width=4,
            height=8,
        ),
        graph(
            "Time to ready after a cold start",
            [
                Query(q.cold_start_quantile(0.5, m), "p50"),
                Query(q.cold_start_quantile(0.95, m), "p95"),
            ],
            unit="s",
            description="From the scale-up to a ready replica, over the last hour.",
            width=10,
        ),
        graph(
            "Activation queue",
            [
                Query(q.activator_pending(m), "held by the activator"),
                Query(q.signal_value(Signal.QUEUE_DEPTH, m), "queued at the servers"),
            ],
            description="Requests waiting for a replica: held by the activator while the "
            "model wakes, and queued in the model servers.",
            width=10,
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def build() -> DashboardModel:
    """The policy overview dashboard."""
    dashboard = (
        Dashboard("scaler / policy overview")
        .uid(UID)
        .description("Every model scaler scales: demand against targets, decisions, wakes.")
        .tags(["scaler", "autoscaling"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(datasource_variable())
        .with_variable(model_variable(names.DESIRED_REPLICAS, multi=True))
    )
    dashboard = _fleet_row(dashboard)
    dashboard = _model_row(dashboard)
    return dashboard.build()
