"""The load signals scaler scales on, by name (the names appear in policies and metrics)."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    """One load signal of a model, summed over its replicas."""

    QUEUE_DEPTH = "queue_depth"  # requests waiting for a slot
    TOKENS_PER_SECOND = "tokens_per_second"  # generated tokens per second
    INFLIGHT_REQUESTS = "inflight_requests"  # requests being processed (running + waiting)
    REQUEST_RATE = "request_rate"  # requests per second

    @property
    def grows_with_backlog(self) -> bool:
        """Whether the signal inflates while capacity is missing, not only with demand.

        A queue and the in-flight count keep growing while new replicas load, even when the
        arrival rate is flat; scaling on them during a cold start cascades (2 -> 4 -> 8).
        """
        return self in (Signal.QUEUE_DEPTH, Signal.INFLIGHT_REQUESTS)
