"""Ground-truth round trip: simulate a known scenario, backfill a real Prometheus with its
OpenMetrics export, then ``scaler record`` and ``scaler calibrate`` must find it again.

The scenario (simulations/roundtrip/scenario.yaml: mistral-7b on vLLM, tinyllama and an
on-demand Mixtral on llama.cpp, four hours) runs under scaler; its export carries the series
real pods would have (engine_metrics), ``promtool tsdb create-blocks-from openmetrics``
writes them into a TSDB, and a real Prometheus serves them. The tolerances are the issue's:
decode and prefill speeds within 10 %, the cold-start median within 15 %, requests per model
per hour within 1 %, and the recorded trace replayed on the calibrated scenario within 5 %
of the original run's GiB-hours. Every assertion message prints the figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation import openmetrics
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import SimulationResult, simulate
from scaler.simulation.report import build_report
from scaler.simulation.scenario import PreparedScenario, Scenario, prepare
from tests.integration.prometheus import PrometheusServer, create_blocks, prometheus_binary

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "simulations" / "roundtrip" / "scenario.yaml"
POLICIES = ROOT / "policies"
STEP = 15


@dataclass(frozen=True)
class RoundTrip:
    """The original run, and what record and calibrate made of its backfilled series."""

    prepared: PreparedScenario
    original: SimulationResult
    trace: Path
    scenario: Path
    url: str
    record_output: str
    calibrate_output: str

    @property
    def start(self) -> float:
        return openmetrics.EPOCH

    @property
    def end(self) -> float:
        return openmetrics.EPOCH + math.floor(self.original.duration / STEP) * STEP


def _range(trip: RoundTrip) -> list[str]:
    return ["--start", f"{trip.start:.0f}", "--end", f"{trip.end:.0f}", "--step", f"{STEP}s"]


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundTrip]:
    if prometheus_binary() is None:
        pytest.fail("Prometheus is not installed (scripts/test installs it)", pytrace=False)
    tmp = tmp_path_factory.mktemp("roundtrip")
    prepared = prepare(SCENARIO)
    original = simulate(prepared, make_autoscaler("scaler", prepared))
    create_blocks(openmetrics.render(original), tmp / "tsdb")
    server = PrometheusServer.start_on_blocks(tmp / "tsdb")
    try:
        runner = CliRunner()
        trace, scenario = tmp / "recorded.csv", tmp / "calibrated.yaml"
        base = ["--prometheus-url", server.url, "--policies", str(POLICIES)]
        partial = RoundTrip(prepared, original, trace, scenario, server.url, "", "")
        recorded = runner.invoke(app, ["record", *base, *_range(partial), "--out", str(trace)])
        assert recorded.exit_code == 0, recorded.output
        calibrated = runner.invoke(
            app,
            ["calibrate", *base, *_range(partial), "--trace", str(trace), "--out", str(scenario)],
        )
        assert calibrated.exit_code == 0, calibrated.output
        yield RoundTrip(
            prepared, original, trace, scenario, server.url, recorded.output, calibrated.output
        )
    finally:
        server.stop()


def _profiles(path: Path) -> Scenario:
    return Scenario.model_validate(yaml.safe_load(path.read_text()))


def _hourly(times: np.ndarray, hours: int) -> list[int]:
    counts = np.bincount((times // 3600).astype(np.int64), minlength=hours)[:hours]
    return [int(c) for c in counts]


def test_requests_per_model_per_hour_within_one_percent(trip: RoundTrip) -> None:
    """Every model's recorded requests in every hour of traffic are within 1 % of the
    original trace's (counts from the engine's or the activator's counters)."""
    recorded = prepare(trip.scenario).trace
    original = trip.prepared.trace
    hours = math.ceil(original.duration / 3600)
    rows = []
    worst = 0.0
    for name in trip.prepared.models:
        want = _hourly(original.time[original.model == original.models.index(name)], hours)
        got = _hourly(recorded.time[recorded.model == recorded.models.index(name)], hours)
        for hour, (w, g) in enumerate(zip(want, got, strict=True)):
            error = (g - w) / w if w else float(g > 0)
            worst = max(worst, abs(error))
            rows.append(f"{name} hour {hour}: original {w}, recorded {g} ({error:+.2%})")
    assert worst <= 0.01, "\n".join(rows)
    print("\n".join(rows))  # the figures for the closing note (pytest -s)


def test_decode_and_prefill_speeds_within_ten_percent(trip: RoundTrip) -> None:
    """Each model's fitted prefill and one-stream decode speeds are within 10 % of the
    scenario's (llama.cpp from its time counters, vLLM from its histograms)."""
    truth = trip.prepared.scenario.models
    fitted = _profiles(trip.scenario).models
    rows = []
    bad = []
    for name, true in truth.items():
        got = fitted[name]
        for what, want, value in (
            ("prefill", true.prefill_tokens_per_second, got.prefill_tokens_per_second),
            ("decode", true.decode_tokens_per_second, got.decode_tokens_per_second),
        ):
            error = value / want - 1
            rows.append(f"{name} {what}: true {want}, fitted {value:.3f} ({error:+.1%})")
            if abs(error) > 0.10:
                bad.append(rows[-1])
        rows.append(
            f"{name} slowdown/stream: true {true.decode_slowdown_per_stream}, fitted "
            f"{got.decode_slowdown_per_stream:.3f} (approximate, not asserted)"
        )
    assert not bad, "\n".join(rows)
    print("\n".join(rows))


def test_cold_start_median_within_fifteen_percent(trip: RoundTrip) -> None:
    """Mixtral's cold starts (dozens: it goes to zero between sessions) give a log-normal
    whose median is within 15 % of the scenario's; the comment carries the sample count."""
    true = trip.prepared.scenario.models["mixtral-8x7b"].cold_start.median_seconds
    got = _profiles(trip.scenario).models["mixtral-8x7b"].cold_start.median_seconds
    block = trip.scenario.read_text().split("  mixtral-8x7b:")[1].split("\n  tinyllama:")[0]
    line = next(line for line in block.splitlines() if "coldStart" in line)
    assert abs(got / true - 1) <= 0.15, f"true {true} s, fitted {got:.1f} s: {line}"
    assert "fitted log-normal" in line, line
    assert "cold starts" in line, line
    print(f"mixtral-8x7b cold-start median: true {true} s, fitted {got:.2f} s ({line})")


def test_slots_and_memory_are_the_scenarios(trip: RoundTrip) -> None:
    """Slots (seen full with a queue) and memory (the pods' working set) come back exactly."""
    truth = trip.prepared.scenario.models
    fitted = _profiles(trip.scenario).models
    for name, true in truth.items():
        assert fitted[name].slots == true.slots, name
        assert fitted[name].memory_gib == true.memory_gib, name


def test_recorded_replay_costs_what_the_original_did(trip: RoundTrip) -> None:
    """The recorded trace replayed on the calibrated scenario (same policies) costs within
    5 % of the original run's GiB-hours, over the models the original ran."""
    replay = prepare(trip.scenario)
    again = simulate(replay, make_autoscaler("scaler", replay))
    before, after = build_report(trip.original), build_report(again)
    rows = [
        f"{name}: original {before.models[name].gib_hours:.2f} GiB-h, replay "
        f"{after.models[name].gib_hours:.2f} GiB-h"
        for name in trip.prepared.models
    ]
    # The calibrated scenario has every policy's model; deepseek-coder had no traffic (it
    # keeps its prior and costs its minimum): compare the models the original ran.
    total_before = sum(before.models[m].gib_hours for m in trip.prepared.models)
    total_after = sum(after.models[m].gib_hours for m in trip.prepared.models)
    rows.append(
        f"total: original {total_before:.2f}, replay {total_after:.2f} "
        f"({total_after / total_before - 1:+.2%})"
    )
    assert abs(total_after / total_before - 1) <= 0.05, "\n".join(rows)
    print("\n".join(rows))


def test_calibrated_scenario_validates_and_says_where_figures_come_from(trip: RoundTrip) -> None:
    """`scaler validate` accepts the written scenario; a model without traffic keeps its
    prior and says so; fitted figures carry their interval and sample count."""
    result = CliRunner().invoke(app, ["validate", str(trip.scenario)])
    assert result.exit_code == 0, result.output
    text = trip.scenario.read_text()
    assert "deepseek-coder:" in text
    deepseek = text.split("deepseek-coder:")[1].split("\n  mistral-7b:")[0]
    assert "prior (0 requests seen)" in deepseek, deepseek
    assert "95% CI" in text
    assert "ServiceEstimate" in text
    # The export's 15 s scrape, measured on the samples (not the --step: both are 15 here).
    assert "scrapeIntervalSeconds: 15.0  # measured" in text
    assert "hpaSyncPeriodSeconds: 15.0  # --hpa-sync-period" in text


def test_a_model_without_series_is_named_with_metric_and_matcher(trip: RoundTrip) -> None:
    """record reports deepseek-coder (no traffic) by the metric and matchers it looked for."""
    assert "deepseek-coder: no requests in the range" in trip.record_output
    assert 'scaler_activator_forwarded_total{model="deepseek-coder"}' in trip.record_output


def test_a_range_without_data_is_an_error_naming_what_was_looked_for(trip: RoundTrip) -> None:
    """A range before the backfilled history: exit 1, naming metric and matcher."""
    result = CliRunner().invoke(
        app,
        [
            "record", "--prometheus-url", trip.url, "--policies", str(POLICIES),
            "--start", f"{trip.start - 86400:.0f}", "--end", f"{trip.start - 3600:.0f}",
            "--out", str(trip.trace.with_name("empty.csv")),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no data for any model" in result.output
    wanted = (
        '{__name__=~"vllm:time_to_first_token_seconds_count|vllm_time_to_first_token_seconds_count"'
        ',namespace="cortex",model="mistral-7b"}'
    )
    assert wanted in result.output


def test_progress_counts_every_step_of_every_query_once(trip: RoundTrip) -> None:
    """Reading all policies and the nodes: progress rises to exactly the planned total, and
    the client sent exactly the planned queries (one per series family: the range fits one
    query of at most 10,000 steps)."""
    from scaler.core import Engine
    from scaler.policy import load_policies
    from scaler.simulation.history import HistoryReader, queries_per_model
    from scaler.sources.history import Grid, PrometheusHistory

    calls: list[tuple[float, float]] = []
    client = PrometheusHistory(trip.url, progress=lambda done, total: calls.append((done, total)))
    grid = Grid(trip.start, STEP, int((trip.end - trip.start) // STEP) + 1)
    reader = HistoryReader(client, grid)
    policies = load_policies(POLICIES)
    reader.plan(policies)
    for policy in policies:
        reader.read(policy)
    reader.nodes()
    planned = sum(queries_per_model(p.engine) for p in policies) + 1
    assert client.queries == planned
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (planned * grid.count, planned * grid.count)
    assert queries_per_model(Engine.VLLM) > queries_per_model(Engine.LLAMACPP)
