"""The activator's self-metrics (names from ``scaler.metric_names``), one registry per app.

A registry of its own (not the process-wide default) so two activators in one process (tests,
the benchmark) do not share counters.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from scaler.metric_names import (
    ACTIVATOR_FORWARDED,
    ACTIVATOR_PENDING,
    ACTIVATOR_REJECTED,
    ACTIVATOR_TIMEOUTS,
    ACTIVATOR_WAIT,
)

# Held requests wait from milliseconds (a warm model that was being probed) to minutes (a
# Mixtral cold start from a cold page cache). Every shipped policy's slo.queueWaitSeconds (2,
# 10, 15, 90) is a bound, so the live SLO recording rules read the exact threshold.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 15, 20, 30, 60, 90, 120, 180, 240, 300, 600)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The exposition format served on /metrics (Prometheus text 0.0.4)."""


# No ``<counter>_created`` / ``<histogram>_created`` series: in the text format each is a
# gauge of its own (``scaler_decisions_created``...), noise on every dashboard query. The
# switch is process-wide (prometheus_client 0.26 has no per-registry one); this process
# serves these metrics only.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class RejectReason(StrEnum):
    """Why the activator answered a request itself instead of forwarding it (label reason)."""

    QUEUE_FULL = "queue_full"  # the model's hold queue was at --queue-size
    TIMEOUT = "timeout"  # no ready endpoint within the hold timeout
    BODY_TOO_LARGE = "body_too_large"  # request body above --max-body-bytes
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # no valid response (refused...): 502
    SHUTTING_DOWN = "shutting_down"  # held when the activator stopped: 503


class ActivatorMetrics:
    """Pending gauge, wait histogram, forwarded/timeouts/rejected counters, labelled by model."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pending = Gauge(
            ACTIVATOR_PENDING,
            "Requests held by the activator now, waiting for a ready endpoint.",
            ["model"],
            registry=self.registry,
        )
        self.wait = Histogram(
            ACTIVATOR_WAIT,
            "Seconds a held request waited before it was forwarded.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.forwarded = Counter(
            ACTIVATOR_FORWARDED,
            "Requests forwarded to a model server (any upstream status).",
            ["model"],
            registry=self.registry,
        )
        self.timeouts = Counter(
            ACTIVATOR_TIMEOUTS,
            "Held requests answered 503 because no endpoint became ready in time.",
            ["model"],
            registry=self.registry,
        )
        self.rejected = Counter(
            ACTIVATOR_REJECTED,
            "Requests the activator answered itself, by reason.",
            ["model", "reason"],
            registry=self.registry,
        )
        # Every series exists from the start at 0, so rate() and absent() behave on a fresh pod
        # and the pending gauge reads 0 (not "no data") for an idle model.
        for model in models:
            self.pending.labels(model=model).set(0)
            self.wait.labels(model=model)
            self.forwarded.labels(model=model)
            self.timeouts.labels(model=model)
            for reason in RejectReason:
                self.rejected.labels(model=model, reason=reason.value)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)
