"""The names scaler's parts share on the wire: every metric scaler exports, and its label.

A contract for dashboards, alerts, the simulator and the API. The external metrics (served to
the HPA) and the self-metrics (Prometheus /metrics of the adapter and the activator) are
defined once here: the live adapter and the activator export them, the Prometheus source reads
the activator's, the simulator's ``--openmetrics`` export writes the same names so a
simulation can be backfilled and shown on the same Grafana dashboards, and the dashboards and
alerts query them. Names only, no behaviour: the module sits below every layer that uses it
(above ``scaler.core``, whose ``Signal`` keys the external metric names), so the simulator and
the dashboards need nothing from the adapter's server (docs/design.md, "Layout").
"""

from __future__ import annotations

from typing import Final

from scaler.core import Signal

MODEL_LABEL: Final = "model"
"""The label naming the model: on every series scaler reads and exports (target relabeling adds
it to the engines' series), and the one label of every external metric item."""

# --- External metrics API (external.metrics.k8s.io/v1beta1), selected by label model=<name>.
EXTERNAL_DESIRED_REPLICAS: Final = "scaler-desired-replicas"
EXTERNAL_BY_SIGNAL: Final[dict[Signal, str]] = {
    Signal.QUEUE_DEPTH: "scaler-queue-depth",
    Signal.TOKENS_PER_SECOND: "scaler-tokens-per-second",
    Signal.REQUEST_RATE: "scaler-request-rate",
    Signal.INFLIGHT_REQUESTS: "scaler-inflight-requests",
}
EXTERNAL_METRICS: Final[tuple[str, ...]] = (EXTERNAL_DESIRED_REPLICAS, *EXTERNAL_BY_SIGNAL.values())

# --- Adapter self-metrics. Labels in the comments.
DESIRED_REPLICAS: Final = "scaler_desired_replicas"  # gauge {model}
CURRENT_REPLICAS: Final = "scaler_current_replicas"  # gauge {model}
READY_REPLICAS: Final = "scaler_ready_replicas"  # gauge {model}
STARTING_REPLICAS: Final = "scaler_starting_replicas"  # gauge {model}
PLACEMENT_CAP: Final = "scaler_placement_cap_replicas"  # gauge {model}; absent when unknown
SIGNAL_VALUE: Final = "scaler_signal_value"  # gauge {model, signal}: summed; absent if missing
SIGNAL_TARGET: Final = "scaler_signal_target"  # gauge {model, signal}: per-replica target
DECISIONS: Final = "scaler_decisions_total"  # counter {model, reason}
COLD_STARTS: Final = "scaler_cold_starts_total"  # counter {model}: scale-ups from zero
COLD_START_DURATION: Final = "scaler_cold_start_duration_seconds"  # histogram {model}: to ready
DATA_AGE: Final = "scaler_metrics_age_seconds"  # gauge {model}: age of the newest sample
LAST_TICK: Final = "scaler_last_tick_timestamp_seconds"  # gauge: end of the last control tick
PROMETHEUS_QUERY_DURATION: Final = "scaler_prometheus_query_duration_seconds"  # histogram {signal}
PROMETHEUS_QUERY_ERRORS: Final = "scaler_prometheus_query_errors_total"  # counter {signal}
PROMETHEUS_QUERIES: Final = "scaler_prometheus_queries_total"  # counter {signal}
API_REQUEST_DURATION: Final = "scaler_api_request_duration_seconds"  # histogram {path, code}
LEADER: Final = "scaler_leader"  # gauge: 1 while this replica holds the lease
SCALE_WRITES: Final = "scaler_scale_writes_total"  # counter {model, result}
# SLO sizing (policies with a sizing section); absent for a model whose last decision was not
# sized (no request rate, or a targets-only policy).
SIZED_REPLICAS: Final = "scaler_sized_replicas"  # gauge {model}: what the queueing model asks
SERVICE_SECONDS: Final = "scaler_service_seconds"  # gauge {model}: calibrated mean service time
ARRIVAL_RATE: Final = "scaler_arrival_rate"  # gauge {model}: requests/s sized for
PREDICTED_WAIT: Final = "scaler_predicted_wait_seconds"  # gauge {model}: at the SLO percentile
PREDICTED_OVERFLOW: Final = "scaler_predicted_overflow_ratio"  # gauge {model}: P(slots overrun)
SLO_WAIT: Final = "scaler_slo_wait_seconds"  # gauge {model}: the policy's slo.queueWaitSeconds
KEEP_ALIVE: Final = "scaler_keep_alive_seconds"  # gauge {model}: idle time before zero

# --- Activator self-metrics.
ACTIVATOR_PENDING: Final = "scaler_activator_pending_requests"  # gauge {model}: held now
ACTIVATOR_WAIT: Final = "scaler_activator_wait_seconds"  # histogram {model}: hold time
ACTIVATOR_FORWARDED: Final = "scaler_activator_forwarded_total"  # counter {model}
ACTIVATOR_TIMEOUTS: Final = "scaler_activator_timeouts_total"  # counter {model}
ACTIVATOR_REJECTED: Final = "scaler_activator_rejected_total"  # counter {model, reason}
