"""Model detail: one model (the `model` variable), every signal on its own panel.

Where the overview compares models, this page explains one: each signal next to the load
the ready replicas carry at the policy's target (above the line means scaler wants more
replicas), how fresh the data is, what cold starts cost, what the activator held and what
the adapter wrote to the Deployment's scale subresource.
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

UID = "scaler-model-detail"
"""Stable dashboard uid: links and bookmarks survive re-imports."""

_SIGNAL_UNITS = {
    Signal.QUEUE_DEPTH: "short",
    Signal.TOKENS_PER_SECOND: "short",
    Signal.INFLIGHT_REQUESTS: "short",
    Signal.REQUEST_RATE: "reqps",
}
_SIGNAL_TITLES = {
    Signal.QUEUE_DEPTH: "Queue depth (requests waiting for a slot)",
    Signal.TOKENS_PER_SECOND: "Generated tokens per second",
    Signal.INFLIGHT_REQUESTS: "In-flight requests (running + waiting)",
    Signal.REQUEST_RATE: "Request rate",
}


def _decision_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("Decision"))
    for title, metric in (
        ("Desired", names.DESIRED_REPLICAS),
        ("Current", names.CURRENT_REPLICAS),
        ("Ready", names.READY_REPLICAS),
        ("Starting", names.STARTING_REPLICAS),
    ):
        dashboard = dashboard.with_panel(
            single_stat(f"{title} replicas", [Query(q.model_gauge(metric, m))])
        )
    dashboard = dashboard.with_panel(
        graph(
            "Replicas",
            [
                Query(q.model_gauge(names.DESIRED_REPLICAS, m), "desired"),
                Query(q.model_gauge(names.CURRENT_REPLICAS, m), "current"),
                Query(q.model_gauge(names.READY_REPLICAS, m), "ready"),
                Query(q.model_gauge(names.PLACEMENT_CAP, m), "placement cap"),
            ],
        )
    )
    return dashboard.with_panel(
        graph(
            "Decisions by reason",
            [Query(q.decisions_by_reason(m), "{{reason}}")],
            stacked=True,
        )
    )


def _signal_row(dashboard: Dashboard) -> Dashboard:
    dashboard = dashboard.with_row(Row("Signals against their targets"))
    for signal in Signal:
        dashboard = dashboard.with_panel(
            graph(
                _SIGNAL_TITLES[signal],
                [
                    Query(q.signal_value(signal, MODEL_MATCHER), "value"),
                    Query(q.signal_capacity(signal, MODEL_MATCHER), "ready replicas × target"),
                ],
                unit=_SIGNAL_UNITS[signal],
                description=f"{signal.value} summed over the replicas, against what the ready "
                "replicas carry at the policy's per-replica target. Above the line, this "
                "signal asks for more replicas.",
            )
        )
    return dashboard


def _sizing_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("SLO sizing (queueing model)"))
    panels = [
        graph(
            "Sized replicas",
            [
                Query(q.model_gauge(names.SIZED_REPLICAS, m), "queueing model"),
                Query(q.model_gauge(names.DESIRED_REPLICAS, m), "desired"),
            ],
            description="The fewest replicas whose slots hold the requests expected one "
            "reaction time (detection + cold start) ahead, but for the SLO's miss ratio; "
            "desired follows it after windows, steps and bounds. Absent when a decision was "
            "not sized (no request rate: the per-replica targets decide).",
            width=8,
        ),
        graph(
            "Predicted queue wait at the SLO percentile",
            [
                Query(q.model_gauge(names.PREDICTED_WAIT, m), "predicted (steady state)"),
                Query(q.model_gauge(names.SLO_WAIT, m), "SLO threshold"),
            ],
            unit="s",
            description="Erlang C wait with the desired replicas at the measured rate and "
            "service time; above the threshold the model is short of replicas.",
            width=8,
        ),
        graph(
            "Calibrated profile",
            [
                Query(q.model_gauge(names.SERVICE_SECONDS, m), "service time (s)"),
                Query(q.model_gauge(names.KEEP_ALIVE, m), "keep-alive (s, on-demand)"),
            ],
            unit="s",
            description="Mean time a request holds a slot, by Little's law from in-flight "
            "requests and the request rate, shrunk towards the policy's prior; the idle time "
            "after which an on-demand model goes to zero (from its observed idle gaps).",
            width=8,
        ),
        graph(
            "Arrival rate sized for",
            [
                Query(q.model_gauge(names.ARRIVAL_RATE, m), "sized for"),
                Query(q.signal_value(Signal.REQUEST_RATE, m), "1 m rate"),
            ],
            unit="reqps",
            description="The long-run rate, or what a burst in the 1 m window proves beyond it.",
            width=12,
        ),
        graph(
            "Predicted overflow",
            [Query(q.model_gauge(names.PREDICTED_OVERFLOW, m), "P(slots overrun)")],
            unit="percentunit",
            description="Chance that the requests one reaction time ahead overrun the desired "
            "replicas' slots (the policy allows 1 - slo.percentile / 100).",
            width=12,
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def _cold_start_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("Cold starts and data"))
    dashboard = dashboard.with_panel(
        single_stat("Cold starts", [Query(q.cold_starts(m))], width=4, height=8)
    )
    dashboard = dashboard.with_panel(
        graph(
            "Time to ready after a cold start",
            [
                Query(q.cold_start_quantile(0.5, m), "p50"),
                Query(q.cold_start_quantile(0.95, m), "p95"),
            ],
            unit="s",
            width=10,
        )
    )
    return dashboard.with_panel(
        graph(
            "Age of the newest sample",
            [Query(q.model_gauge(names.DATA_AGE, m), "age")],
            unit="s",
            description="Older than the policy's data.staleAfterSeconds, the API answers 503 "
            "and the HPA holds.",
            width=10,
        )
    )


def _activator_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("Activator and actuation"))
    panels = [
        graph("Requests held", [Query(q.activator_pending(m), "held")], width=8),
        graph(
            "Hold time",
            [
                Query(q.activator_wait_quantile(0.5, m), "p50"),
                Query(q.activator_wait_quantile(0.95, m), "p95"),
            ],
            unit="s",
            width=8,
        ),
        graph(
            "Activator outcomes",
            [
                Query(q.activator_rate(names.ACTIVATOR_FORWARDED, m), "forwarded"),
                Query(q.activator_rate(names.ACTIVATOR_TIMEOUTS, m), "timed out"),
                Query(q.activator_rate(names.ACTIVATOR_REJECTED, m), "rejected"),
            ],
            unit="reqps",
            width=8,
        ),
        graph(
            "Scale subresource writes",
            [Query(q.scale_writes(m), "{{result}}")],
            unit="wps",
            description="Writes by the leader: wakes (0 → 1) and sleeps (1 → 0).",
            width=24,
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def _pods_row(dashboard: Dashboard) -> Dashboard:
    m = MODEL_MATCHER
    dashboard = dashboard.with_row(Row("Pods, live SLO and cost"))
    panels = [
        graph(
            "Memory per pod",
            [
                Query(q.pod_memory_working_set(), "{{pod}} working set"),
                Query(q.pod_memory_request(), "{{pod}} request"),
            ],
            unit="bytes",
            description="cAdvisor's working set of each model pod (the kubelet evicts and "
            "the kernel OOM-kills on it) against its memory request (= placement.memoryGiB, "
            "what scaler's placement reserves).",
            width=12,
        ),
        graph(
            "CPU per pod",
            [
                Query(q.pod_cpu_usage(), "{{pod}} used"),
                Query(q.pod_cpu_request(), "{{pod}} request"),
            ],
            unit="short",
            description="Cores used by each model pod (cAdvisor) against its CPU request.",
            width=12,
        ),
        graph(
            "Ready pods",
            [
                Query(q.ready_pods(), "ready (kube-state-metrics)"),
                Query(q.model_gauge(names.DESIRED_REPLICAS, m), "desired (scaler)"),
            ],
            description="Pods whose Ready condition is true, as Kubernetes reports them, "
            "against what scaler asks for; the gap is replicas loading or unschedulable.",
            width=8,
        ),
        graph(
            "Live SLO attainment",
            [
                Query(q.slo_attainment(m), "attained ({{measured}})"),
                Query(q.slo_target(m), "target (slo.percentile)"),
            ],
            unit="percentunit",
            description="Share of the last 5 minutes' requests that waited at most "
            "slo.queueWaitSeconds, the simulator's SLO attainment. vLLM: the engine's queue "
            "time (engine_queue). llama.cpp has no queue-time series: only the activator's "
            "holds and timeouts count (activator_hold), a wait for a slot inside "
            "llama-server is not seen.",
            width=8,
        ),
        graph(
            "Memory requested (GiB)",
            [Query(q.memory_requested_gib(m), "requested")],
            unit="short",
            description="GiB the model's pods request now (0 at zero replicas).",
            width=4,
        ),
        single_stat(
            "GiB-hours (range)",
            [Query(q.gib_hours(m))],
            description="Requested GiB × hours over the dashboard's range: the cost figure "
            "the simulator reports (gib_hours).",
            width=4,
        ),
    ]
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


def build() -> DashboardModel:
    """The model detail dashboard."""
    dashboard = (
        Dashboard("scaler / model detail")
        .uid(UID)
        .description("One model: each signal against its target, cold starts, activator.")
        .tags(["scaler", "autoscaling"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(datasource_variable())
        .with_variable(model_variable(names.DESIRED_REPLICAS, multi=False))
    )
    for row in (
        _decision_row,
        _sizing_row,
        _signal_row,
        _cold_start_row,
        _activator_row,
        _pods_row,
    ):
        dashboard = row(dashboard)
    return dashboard.build()
