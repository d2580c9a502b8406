"""``--step auto``: record and calibrate step at the scrape interval they measure on the
raw samples of a real Prometheus scraping an emulated llama.cpp server every 2 s (neither
the test Prometheus' 1 s nor the 15 s fallback, so a guess cannot pass)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaler.cli import app
from scaler.policy import load_policies
from scaler.simulation.history import scrape_interval
from scaler.sources.history import PrometheusHistory
from tests.integration.model_servers import LlamaCppServer
from tests.integration.prometheus import PrometheusServer, ScrapeTarget, prometheus_binary

pytestmark = pytest.mark.prometheus

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def scraped() -> Iterator[PrometheusServer]:
    """A Prometheus scraping a tinyllama engine every 2 s, with at least 4 samples taken."""
    if prometheus_binary() is None:
        pytest.fail("Prometheus is not installed (scripts/test installs it)", pytrace=False)
    with LlamaCppServer() as engine, PrometheusServer(scrape_interval="2s") as server:
        server.reload([ScrapeTarget(engine.address, {"namespace": "cortex", "model": "tinyllama"})])
        server.wait_for(
            'count_over_time(llamacpp:tokens_predicted_total{model="tinyllama"}[1m]) >= 4',
            timeout=30,
        )
        yield server


def test_the_interval_is_the_samples_spacing(scraped: PrometheusServer) -> None:
    """2 s from tinyllama's samples; the models without series add nothing."""
    now = time.time()
    client = PrometheusHistory(scraped.url)
    assert scrape_interval(client, list(load_policies(POLICIES)), now - 600, now) == 2.0


def test_a_range_without_samples_has_no_interval(scraped: PrometheusServer) -> None:
    client = PrometheusHistory(scraped.url)
    before = time.time() - 7200
    assert scrape_interval(client, list(load_policies(POLICIES)), before - 600, before) is None


def test_record_steps_at_the_measured_interval(scraped: PrometheusServer, tmp_path: Path) -> None:
    """``scaler record`` without --step says the step it measured and reads at it (the
    emulator serves no requests, so the read then finds no data, and says at which step)."""
    result = CliRunner().invoke(
        app,
        [
            "record", "--prometheus-url", scraped.url, "--policies", str(POLICIES),
            "--since", "5m", "--out", str(tmp_path / "trace.csv"),
        ],
    )  # fmt: skip
    assert "step 2s: the models' scrape interval, measured" in result.output, result.output
    assert "(step 2s)" in result.output, result.output


def test_record_falls_back_to_15s_and_says_so(scraped: PrometheusServer, tmp_path: Path) -> None:
    end = time.time() - 7200
    result = CliRunner().invoke(
        app,
        [
            "record", "--prometheus-url", scraped.url, "--policies", str(POLICIES),
            "--start", f"{end - 3600:.0f}", "--end", f"{end:.0f}",
            "--out", str(tmp_path / "trace.csv"),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "could not be measured; stepping at 15s" in result.output, result.output
    assert "(step 15s)" in result.output, result.output
