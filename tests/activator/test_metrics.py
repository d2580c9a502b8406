"""The activator's /metrics exposition."""

from __future__ import annotations

from scaler.activator.metrics import ActivatorMetrics


def test_no_created_series_are_exported() -> None:
    """The counters and the wait histogram export no `<name>_created` series."""
    metrics = ActivatorMetrics(("tinyllama",))
    metrics.forwarded.labels(model="tinyllama").inc()
    metrics.wait.labels(model="tinyllama").observe(1.0)
    text = metrics.exposition().decode()
    assert "scaler_activator_forwarded_total" in text
    assert "_created" not in text
