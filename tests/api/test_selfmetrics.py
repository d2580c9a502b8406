"""SelfMetrics: the exported names and labels, from the contract module."""

from __future__ import annotations

import dataclasses
import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scaler import metric_names as names
from scaler.api.selfmetrics import API_LATENCY_BUCKETS, Health, SelfMetrics
from scaler.core import Reason, Signal
from scaler.core.sizing import Sizing
from tests.api.conftest import make_decision
from tests.builders import make_policy


def samples(metrics: SelfMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_decision_sets_replica_gauges_signals_targets_and_reasons() -> None:
    """observe_decision exports replicas, signal values, per-replica targets and reasons."""
    metrics = SelfMetrics()
    decision = make_decision(desired=3, current=2, reasons=(Reason.DEMAND, Reason.STEP_LIMITED))
    metrics.observe_decision(decision, make_policy("mistral-7b"))
    got = samples(metrics)
    model = (("model", "mistral-7b"),)
    assert got[(names.DESIRED_REPLICAS, model)] == 3
    assert got[(names.CURRENT_REPLICAS, model)] == 2
    assert got[(names.SIGNAL_VALUE, (("model", "mistral-7b"), ("signal", "queue_depth")))] == 1.5
    assert (names.SIGNAL_TARGET, (("model", "mistral-7b"), ("signal", "queue_depth"))) in got
    reason = (("model", "mistral-7b"), ("reason", "StepLimited"))
    assert got[(names.DECISIONS, reason)] == 1


def test_placement_cap_is_absent_when_unknown() -> None:
    """A decision without a placement cap removes the gauge rather than leaving an old one."""
    metrics = SelfMetrics()
    policy = make_policy("mistral-7b")
    metrics.observe_decision(dataclasses.replace(make_decision(), placement_cap=4), policy)
    assert samples(metrics)[(names.PLACEMENT_CAP, (("model", "mistral-7b"),))] == 4
    metrics.observe_decision(make_decision(), policy)
    assert not any(name == names.PLACEMENT_CAP for name, _ in samples(metrics))


def test_signal_value_is_absent_once_the_signal_is_missing() -> None:
    """A signal missing from a later decision stops being exported, not frozen at its old
    value; the signals still read stay."""
    metrics = SelfMetrics()
    policy = make_policy("mistral-7b")
    metrics.observe_decision(make_decision(), policy)
    metrics.observe_decision(make_decision(signals={Signal.TOKENS_PER_SECOND: 80.0}), policy)
    exported = {labels for name, labels in samples(metrics) if name == names.SIGNAL_VALUE}
    assert exported == {(("model", "mistral-7b"), ("signal", "tokens_per_second"))}


def test_a_signal_and_a_cap_come_back_once_known_again() -> None:
    """A removed series is exported again when the next decision has it, also with the very
    value it had before it was removed."""
    metrics = SelfMetrics()
    policy = make_policy("mistral-7b")
    metrics.observe_decision(dataclasses.replace(make_decision(), placement_cap=4), policy)
    metrics.observe_decision(make_decision(signals={}), policy)
    metrics.observe_decision(
        dataclasses.replace(make_decision(signals={Signal.QUEUE_DEPTH: 1.5}), placement_cap=4),
        policy,
    )
    got = samples(metrics)
    assert got[(names.SIGNAL_VALUE, (("model", "mistral-7b"), ("signal", "queue_depth")))] == 1.5
    assert got[(names.PLACEMENT_CAP, (("model", "mistral-7b"),))] == 4


def test_a_gauge_follows_every_change() -> None:
    """Desired replicas exported after 3, 3 and 5: the last value, whatever repeated."""
    metrics = SelfMetrics()
    policy = make_policy("mistral-7b")
    for desired in (3, 3, 5):
        metrics.observe_decision(make_decision(desired=desired), policy)
    assert samples(metrics)[(names.DESIRED_REPLICAS, (("model", "mistral-7b"),))] == 5


def test_reasons_are_counted_per_decision() -> None:
    """Each decision adds one to the counter of each of its reasons."""
    metrics = SelfMetrics()
    policy = make_policy("mistral-7b")
    for _ in range(3):
        metrics.observe_decision(make_decision(), policy)
    assert samples(metrics)[(names.DECISIONS, (("model", "mistral-7b"), ("reason", "Demand")))] == 3


def test_queries_count_errors_and_latency_by_signal() -> None:
    """observe_query counts queries and errors and records latency, by signal."""
    metrics = SelfMetrics()
    metrics.observe_query(Signal.QUEUE_DEPTH.value, 0.02, error=False)
    metrics.observe_query(Signal.QUEUE_DEPTH.value, 5.0, error=True)
    got = samples(metrics)
    signal = (("signal", "queue_depth"),)
    assert got[(names.PROMETHEUS_QUERIES, signal)] == 2
    assert got[(names.PROMETHEUS_QUERY_ERRORS, signal)] == 1
    assert got[(names.PROMETHEUS_QUERY_DURATION + "_count", signal)] == 2


def test_leader_scale_writes_cold_starts_and_tick() -> None:
    """Leader gauge, scale writes by result, cold starts and the last tick are exported."""
    metrics = SelfMetrics()
    metrics.set_leader(True)
    metrics.observe_scale_write("mixtral-8x7b", "conflict")
    metrics.observe_cold_start("mixtral-8x7b", 95.0)
    metrics.mark_tick(1234.5)
    metrics.observe_data_age("mixtral-8x7b", 7.0)
    got = samples(metrics)
    model = (("model", "mixtral-8x7b"),)
    assert got[(names.LEADER, ())] == 1
    assert got[(names.SCALE_WRITES, (("model", "mixtral-8x7b"), ("result", "conflict")))] == 1
    assert got[(names.COLD_STARTS, model)] == 1
    assert got[(names.COLD_START_DURATION + "_sum", model)] == 95.0
    assert got[(names.LAST_TICK, ())] == 1234.5
    assert got[(names.DATA_AGE, model)] == 7.0


def test_two_instances_do_not_share_a_registry() -> None:
    """Each SelfMetrics owns its registry (no global state between apps or tests)."""
    first, second = SelfMetrics(), SelfMetrics()
    first.set_leader(True)
    assert samples(second)[(names.LEADER, ())] == 0


def test_health_becomes_ready_once_marked() -> None:
    """Health is not ready until mark_ready(), then stays ready."""
    health = Health()
    assert not health.ready
    health.mark_ready()
    assert health.ready


def test_sizing_is_exported_and_absent_once_a_decision_is_not_sized() -> None:
    """A sized decision exports the queueing model's view; the next, unsized one removes it
    (a stale service time or prediction would read as current); an endless wait is absent."""
    metrics = SelfMetrics()
    sizing = Sizing(
        replicas=2,
        arrival_rate=0.05,
        service_seconds=48.0,
        load=2.4,
        predicted_miss=0.002,
        slots=2,
    )
    sized = dataclasses.replace(make_decision(desired=2), sizing=sizing, keep_alive_s=120.0)
    policy = make_policy("mistral-7b")
    metrics.observe_decision(sized, policy)
    got = samples(metrics)
    model = (("model", "mistral-7b"),)
    assert got[(names.SIZED_REPLICAS, model)] == 2
    assert got[(names.SERVICE_SECONDS, model)] == 48.0
    assert got[(names.ARRIVAL_RATE, model)] == 0.05
    assert got[(names.PREDICTED_WAIT, model)] == pytest.approx(sizing.predicted_wait_s)
    assert 0.0 < sizing.predicted_wait_s < math.inf
    assert got[(names.PREDICTED_OVERFLOW, model)] == 0.002
    assert got[(names.SLO_WAIT, model)] == policy.slo.queue_wait_seconds
    assert got[(names.KEEP_ALIVE, model)] == 120.0
    endless = sizing._replace(load=4.5)  # more busy slots than 2 replicas x 2 slots: endless
    metrics.observe_decision(dataclasses.replace(sized, sizing=endless), policy)
    assert (names.PREDICTED_WAIT, model) not in samples(metrics)
    metrics.observe_decision(make_decision(desired=2), policy)
    after = samples(metrics)
    for name in (names.SIZED_REPLICAS, names.SERVICE_SECONDS, names.KEEP_ALIVE):
        assert (name, model) not in after


def test_api_latency_is_exported_as_prometheus_clients_histogram_would() -> None:
    """The lock-free API latency histogram writes the samples Histogram writes for the
    same observations (buckets, count, sum), bound values included."""
    metrics = SelfMetrics()
    registry = CollectorRegistry()
    reference = Histogram(
        names.API_REQUEST_DURATION,
        "API request latency by route and status code.",
        ["path", "code"],
        buckets=API_LATENCY_BUCKETS,
        registry=registry,
    )
    observations = [("/a", 200, 0.0005), ("/a", 200, 0.0007), ("/a", 404, 2.0), ("/b", 200, 0.0)]
    for path, code, seconds in observations * 3:
        metrics.observe_api_request(path, code, seconds)
        reference.labels(path, str(code)).observe(seconds)

    def histogram(text: str) -> list[str]:
        return [line for line in text.splitlines() if names.API_REQUEST_DURATION in line]

    ours = histogram(metrics.exposition().decode())
    assert ours == histogram(generate_latest(registry).decode())
    assert len(ours) == 3 * (len(API_LATENCY_BUCKETS) + 1 + 2) + 2  # 3 series, HELP, TYPE


def test_no_created_series_are_exported() -> None:
    """Counters and histograms export no `<name>_created` series (a gauge of its own in the
    text format: scaler_decisions_created, noise on every dashboard)."""
    metrics = SelfMetrics()
    metrics.observe_decision(make_decision(), make_policy("mistral-7b"))
    metrics.observe_query("queue_depth", 0.01, error=False)
    metrics.observe_cold_start("mistral-7b", 30.0)
    metrics.observe_api_request("/apis", 200, 0.001)
    text = metrics.exposition().decode()
    assert "scaler_decisions_total" in text
    assert "_created" not in text
