"""Fixtures for tests that need a real Prometheus.

`prometheus` is module-scoped: one Prometheus per test module (start ~0.1 s, first scrape of
a new target ~5 s later), started with no targets; a module configures its scrape targets
with `prometheus.reload([...])`, ideally once in a module-scoped fixture of its own. Tests in
one module therefore share the TSDB: give each test its own `model` label values when they
must not see each other's series.

A missing Prometheus binary FAILS the test with the install command: CI installs it
(scripts/test), so a skip would hide a broken setup.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.prometheus import PrometheusServer, prometheus_binary


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """A started Prometheus (scrape interval 1 s, temporary TSDB) for the whole module."""
    if prometheus_binary() is None:
        pytest.fail(
            "Prometheus is not installed: the integration tests need the real binary. "
            "Install it with `apt-get install -y --no-install-recommends prometheus` "
            "(scripts/test does this when run as root).",
            pytrace=False,
        )
    server = PrometheusServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
