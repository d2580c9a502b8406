"""Fixtures every test gets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults_after_each_test() -> Iterator[None]:
    """Put structlog back to its defaults after a test. A CLI test that runs `scaler serve`
    or `scaler activator` in click's runner configures logging onto the runner's stdout or
    stderr, which the runner closes: every later test that logs then failed with "I/O
    operation on closed file" (tests/policy before tests/live did)."""
    yield
    structlog.reset_defaults()
