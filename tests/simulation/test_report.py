"""The JSON report contract and the OpenMetrics export (promtool backfill, real Prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from scaler import metric_names
from scaler.simulation import openmetrics
from scaler.simulation.engine import SimulationResult, simulate
from scaler.simulation.report import build_report, reports_json
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.traces import TokenSizes, merge, poisson
from tests.builders import make_policy
from tests.integration.prometheus import (
    PrometheusServer,
    create_blocks,
    prometheus_binary,
    promtool_binary,
)
from tests.simulation.scenario_builders import make_scenario

MODEL_KEYS = [
    "requests",
    "served",
    "dropped",
    "slo_attainment",
    "queue_wait_s",
    "ttft_s",
    "replica_seconds",
    "gib_hours",
    "cold_starts",
    "scale_events",
    "max_replicas",
    "unplaceable_s",
    "slo_percentile",
    "slo_threshold_s",
    "slo_wait_s",
]


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    """A short two-model run under scaler (mixtral wakes from zero once)."""
    policies = [make_policy("tinyllama"), make_policy("mixtral-8x7b")]
    traffic = merge(
        [
            poisson("tinyllama", rate=0.3, duration=900, sizes=TokenSizes(300, 80), seed=1),
            poisson(
                "mixtral-8x7b", rate=0.01, duration=600, sizes=TokenSizes(300, 80), seed=2
            ).shifted(200),
        ]
    )
    prepared = make_scenario(traffic, policies=policies, drain_seconds=300)
    return simulate(prepared, ScalerPolicy(prepared.policies))


def test_json_report_has_exactly_the_contract_keys(result: SimulationResult) -> None:
    """docs/formats.md "Simulation report": top-level, per-model and total keys, exactly."""
    document = build_report(result).to_json()
    assert list(document) == ["scenario", "policy", "duration_s", "wall_s", "models", "total"]
    assert document["policy"] == "scaler"
    models = document["models"]
    assert isinstance(models, dict)
    assert list(models) == ["tinyllama", "mixtral-8x7b"]
    for figures in [*models.values(), document["total"]]:
        assert isinstance(figures, dict)
        assert list(figures) == MODEL_KEYS
        waits, ttft = figures["queue_wait_s"], figures["ttft_s"]
        assert isinstance(waits, dict)
        assert isinstance(ttft, dict)
        assert list(waits) == ["p50", "p95", "p99", "max"]
        assert list(ttft) == ["p50", "p95", "p99"]
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity


def test_report_counts_add_up(result: SimulationResult) -> None:
    """Served + dropped = requests per model; totals are the sums; a wake is a cold start."""
    report = build_report(result)
    for figures in report.models.values():
        assert figures.served + figures.dropped == figures.requests
    assert report.total.requests == len(result.arrival)
    assert report.total.gib_hours == pytest.approx(sum(m.gib_hours for m in report.models.values()))
    mixtral = report.models["mixtral-8x7b"]
    assert mixtral.cold_starts >= 1
    assert mixtral.gib_hours == pytest.approx(mixtral.replica_seconds * 30 / 3600, rel=1e-3)


def test_slo_attainment_counts_waits_within_the_threshold(result: SimulationResult) -> None:
    """slo_attainment = share of all requests served within slo.queueWaitSeconds."""
    report = build_report(result)
    mine = result.model == 1  # mixtral: 90 s threshold
    waits = (result.start - result.arrival)[mine]
    expected = float(np.mean(np.nan_to_num(waits, nan=np.inf) <= 90.0))
    assert report.models["mixtral-8x7b"].slo_attainment == pytest.approx(expected)


def test_several_reports_serialize_as_a_list(result: SimulationResult) -> None:
    """--json holds the object for one policy and a list of objects for several."""
    report = build_report(result)
    assert isinstance(reports_json([report]), dict)
    assert reports_json([report, report]) == [report.to_json(), report.to_json()]


def test_openmetrics_uses_the_exported_names_and_ends_with_eof(result: SimulationResult) -> None:
    """Every family is one of scaler.metric_names or a model server's, cAdvisor's or
    kube-state-metrics' (both engines here are llama.cpp); seconds timestamps; final # EOF."""
    text = openmetrics.render(result)
    assert text.endswith("# EOF\n")
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    expected = {
        metric_names.DESIRED_REPLICAS,
        metric_names.CURRENT_REPLICAS,
        metric_names.READY_REPLICAS,
        metric_names.STARTING_REPLICAS,
        metric_names.SIGNAL_VALUE,
        metric_names.SIGNAL_TARGET,
        metric_names.PLACEMENT_CAP,
        metric_names.DECISIONS.removesuffix("_total"),
        metric_names.COLD_STARTS.removesuffix("_total"),
        metric_names.COLD_START_DURATION,
        metric_names.DATA_AGE,
        metric_names.LAST_TICK,
        metric_names.LEADER,
        metric_names.SCALE_WRITES.removesuffix("_total"),
        metric_names.SIZED_REPLICAS,
        metric_names.SERVICE_SECONDS,
        metric_names.ARRIVAL_RATE,
        metric_names.PREDICTED_WAIT,
        metric_names.PREDICTED_OVERFLOW,
        metric_names.SLO_WAIT,
        metric_names.KEEP_ALIVE,
        metric_names.ACTIVATOR_PENDING,
        metric_names.ACTIVATOR_WAIT,
        metric_names.ACTIVATOR_FORWARDED.removesuffix("_total"),
        metric_names.ACTIVATOR_TIMEOUTS.removesuffix("_total"),
        metric_names.ACTIVATOR_REJECTED.removesuffix("_total"),
        metric_names.SIZED_REPLICAS,
        metric_names.SERVICE_SECONDS,
        metric_names.ARRIVAL_RATE,
        metric_names.PREDICTED_WAIT,
        metric_names.PREDICTED_OVERFLOW,
        metric_names.SLO_WAIT,
        metric_names.KEEP_ALIVE,
        # What the pods, cAdvisor and kube-state-metrics would have exposed (engine_metrics).
        "llamacpp:prompt_tokens",
        "llamacpp:prompt_seconds",
        "llamacpp:tokens_predicted",
        "llamacpp:tokens_predicted_seconds",
        "llamacpp:n_decode",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:n_busy_slots_per_decode",
        "container_memory_working_set_bytes",
        "kube_node_status_allocatable",
    }
    assert families == expected
    first = next(line for line in text.splitlines() if not line.startswith("#"))
    assert float(first.rsplit(" ", 1)[1]) == openmetrics.EPOCH


@pytest.mark.prometheus
@pytest.mark.skipif(
    prometheus_binary() is None or promtool_binary() is None, reason="needs Prometheus"
)
def test_openmetrics_backfills_into_prometheus(result: SimulationResult, tmp_path: Path) -> None:
    """promtool accepts the export; Prometheus on the blocks answers with simulated values."""
    create_blocks(openmetrics.render(result), tmp_path / "tsdb")
    ready = result.series[1].ready  # mixtral
    woke = int(np.argmax(ready > 0))
    at = openmetrics.EPOCH + float(result.scrape_times[woke])
    with PrometheusServer.start_on_blocks(tmp_path / "tsdb") as prometheus:
        samples = prometheus.query(f'{metric_names.READY_REPLICAS}{{model="mixtral-8x7b"}}', at=at)
        wakes = prometheus.query(
            f'{metric_names.COLD_STARTS}{{model="mixtral-8x7b"}}',
            at=openmetrics.EPOCH + float(result.scrape_times[-1]),
        )
    assert [s.value for s in samples] == [float(ready[woke])]
    assert wakes[0].value >= 1
