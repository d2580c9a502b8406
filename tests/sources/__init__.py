"""Tests of scaler.sources (templates, batching, the Prometheus source)."""
