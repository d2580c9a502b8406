"""The PromQL behind the dashboards, built from the exported metric names.

Every adapter replica runs the control loop and exports the same decisions, so per-model
gauges and counters are read with ``max by (model, ...)``: summing them would count each
decision once per replica. Activator replicas each hold their own requests, so activator
series are summed. Counters that only appear on their first increment (errors, timeouts,
rejections) are completed with ``or <sibling counter> * 0``: "no error yet" shows as 0, not
as an empty panel.
"""

from __future__ import annotations

from scaler import metric_names as names
from scaler.core import Signal

RATE = "$__rate_interval"
"""Grafana's rate window (at least four scrape intervals)."""

COLD_START_WINDOW = "1h"
"""Cold starts are rare: their duration quantiles are taken over the last hour."""


def model_gauge(metric: str, matcher: str) -> str:
    """A per-model gauge, one series per model, however many adapter replicas export it."""
    return f"max by (model) ({metric}{{{matcher}}})"


def decisions_by_reason(matcher: str) -> str:
    """Decisions per rate window, by the reason that shaped them."""
    return (
        f"sum by (reason) (max by (model, reason) "
        f"(increase({names.DECISIONS}{{{matcher}}}[{RATE}])))"
    )


def demand_by_signal(matcher: str) -> str:
    """Replicas each signal asks for: its value over one replica's target (what decide() does)."""
    return (
        f"max by (model, signal) ({names.SIGNAL_VALUE}{{{matcher}}})"
        f" / max by (model, signal) ({names.SIGNAL_TARGET}{{{matcher}}})"
    )


def signal_value(signal: Signal, matcher: str) -> str:
    """One signal, summed over the model's replicas."""
    return f'max by (model) ({names.SIGNAL_VALUE}{{{matcher}, signal="{signal.value}"}})'


def signal_capacity(signal: Signal, matcher: str) -> str:
    """What the ready replicas carry at the policy's target: per-replica target × ready."""
    return (
        f'max by (model) ({names.SIGNAL_TARGET}{{{matcher}, signal="{signal.value}"}})'
        f" * on (model) {model_gauge(names.READY_REPLICAS, matcher)}"
    )


def cold_starts(matcher: str, window: str = "$__range") -> str:
    """Scale-ups from zero that became ready within `window`."""
    return f"sum(max by (model) (increase({names.COLD_STARTS}{{{matcher}}}[{window}])))"


def cold_start_quantile(quantile: float, matcher: str) -> str:
    """Seconds from scale-up to ready, `quantile` over the last hour."""
    return (
        f"histogram_quantile({quantile}, sum by (model, le) (max by (model, le) "
        f"(increase({names.COLD_START_DURATION}_bucket{{{matcher}}}[{COLD_START_WINDOW}]))))"
    )


def activator_pending(matcher: str) -> str:
    """Requests the activator holds now, per model (all activator replicas)."""
    return f"sum by (model) ({names.ACTIVATOR_PENDING}{{{matcher}}})"


def activator_wait_quantile(quantile: float, matcher: str) -> str:
    """How long requests were held before being forwarded or given up, `quantile`."""
    return (
        f"histogram_quantile({quantile}, sum by (model, le) "
        f"(rate({names.ACTIVATOR_WAIT}_bucket{{{matcher}}}[{RATE}])))"
    )


def activator_rate(metric: str, matcher: str, *, by: str = "model") -> str:
    """Per-second rate of an activator counter, summed over activator replicas.

    Timeouts and rejections start absent; they are completed with zeros from the forwarded
    counter of the same models.
    """
    expr = f"sum by ({by}) (rate({metric}{{{matcher}}}[{RATE}]))"
    if metric == names.ACTIVATOR_FORWARDED:
        return expr
    return f"{expr} or sum by (model) (rate({names.ACTIVATOR_FORWARDED}{{{matcher}}}[{RATE}])) * 0"


def query_latency_quantile(quantile: float) -> str:
    """Prometheus query latency seen by the adapter, by signal."""
    return (
        f"histogram_quantile({quantile}, sum by (signal, le) "
        f"(rate({names.PROMETHEUS_QUERY_DURATION}_bucket[{RATE}])))"
    )


def query_error_ratio() -> str:
    """Failed share of the adapter's Prometheus queries, by signal (0 while none failed)."""
    errors = f"sum by (signal) (rate({names.PROMETHEUS_QUERY_ERRORS}[{RATE}]))"
    queries = f"sum by (signal) (rate({names.PROMETHEUS_QUERIES}[{RATE}]))"
    return f"({errors} or {queries} * 0) / {queries}"


def api_latency_quantile(quantile: float) -> str:
    """External metrics API latency by route and status code."""
    return (
        f"histogram_quantile({quantile}, sum by (path, code, le) "
        f"(rate({names.API_REQUEST_DURATION}_bucket[{RATE}])))"
    )


def api_requests_by_code() -> str:
    """External metrics API requests per second by status code."""
    return f"sum by (code) (rate({names.API_REQUEST_DURATION}_count[{RATE}]))"


def scale_writes(matcher: str) -> str:
    """Writes to the scale subresource per second, by model and result."""
    return f"sum by (model, result) (rate({names.SCALE_WRITES}{{{matcher}}}[{RATE}]))"


# --- the model pods, from the kubelet's cAdvisor and kube-state-metrics --------------------

MODEL_NAMESPACE = "cortex"
"""Where the shipped policies' Deployments live (``target.namespace``)."""

GIB = 1024**3

SLO_ATTAINMENT = "scaler:slo_attainment:ratio_rate5m"
SLO_TARGET = "scaler:slo_attainment_target:ratio"
MEMORY_REQUESTED_GIB = "scaler:memory_requested_gib:sum"
"""Recording rules of manifests/monitoring/prometheus-rule-slo-cost.yaml."""


def pod_matcher(model_variable: str = "$model") -> str:
    """The pods of the selected models' Deployments (``<deployment>-<hash>-<id>``), in the
    models' namespace; cAdvisor and kube-state-metrics carry pod names, not pod labels."""
    return f'namespace="{MODEL_NAMESPACE}", pod=~"({model_variable})-[a-z0-9]+-[a-z0-9]+"'


def _containers(metric: str) -> str:
    # cAdvisor also reports the pod's cgroup (container="") and the pause container ("POD"):
    # counting them too would double the pod's usage.
    return f'{metric}{{{pod_matcher()}, container!="", container!="POD"}}'


def pod_memory_working_set() -> str:
    """Working-set bytes per model pod (what the kubelet's OOM decisions look at)."""
    return f"sum by (pod) ({_containers('container_memory_working_set_bytes')})"


def pod_memory_request() -> str:
    """Memory requested per model pod (kube-state-metrics)."""
    return (
        f'sum by (pod) (kube_pod_container_resource_requests{{{pod_matcher()}, resource="memory"}})'
    )


def pod_cpu_usage() -> str:
    """CPU cores used per model pod."""
    return f"sum by (pod) (rate({_containers('container_cpu_usage_seconds_total')}[{RATE}]))"


def pod_cpu_request() -> str:
    """CPU cores requested per model pod (kube-state-metrics)."""
    return f'sum by (pod) (kube_pod_container_resource_requests{{{pod_matcher()}, resource="cpu"}})'


def ready_pods() -> str:
    """Pods of the selected model whose Ready condition is true (kube-state-metrics)."""
    return f'sum(kube_pod_status_ready{{{pod_matcher()}, condition="true"}})'


def slo_attainment(matcher: str) -> str:
    """Live share of requests within the SLO's queue wait, per model and what is measured."""
    return f"max by (model, measured) ({SLO_ATTAINMENT}{{{matcher}}})"


def slo_target(matcher: str) -> str:
    """The policy's slo.percentile / 100, per model."""
    return f"max by (model) ({SLO_TARGET}{{{matcher}}})"


def memory_requested_gib(matcher: str) -> str:
    """GiB of memory the model's pods request now."""
    return f"max by (model) ({MEMORY_REQUESTED_GIB}{{{matcher}}})"


def gib_hours(matcher: str, window: str = "$__range", window_seconds: str = "$__range_s") -> str:
    """GiB-hours the model's pods requested over `window`, as the simulator reports cost:
    the mean requested GiB over the window times its length in hours (the rule records 0 at
    zero replicas, so the mean counts that time)."""
    return (
        f"max by (model) (avg_over_time({MEMORY_REQUESTED_GIB}{{{matcher}}}[{window}]))"
        f" * {window_seconds} / 3600"
    )
