"""The live SLO and cost recording rules pass their promtool unit tests and follow the
policies: one attainment rule per model on the series its engine has, at the policy's
slo.queueWaitSeconds (a real bucket bound), the target at slo.percentile / 100, and the
memory rule over exactly the models' pods."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler import metric_names
from scaler.activator.metrics import WAIT_BUCKETS
from scaler.core import Engine
from tests.deploy.objects import MANIFESTS, policies
from tests.deploy.promql import series_names

MONITORING = MANIFESTS / "monitoring"
RULE = MONITORING / "prometheus-rule-slo-cost.yaml"
RULE_TESTS = MONITORING / "prometheus-rule-slo-cost.test.yaml"

VLLM_QUEUE_TIME_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's request_queue_time_seconds buckets (vllm/v1/metrics/loggers.py, the request-latency
buckets of the V1 engine)."""

# What the rules read that scaler does not export: the engine's and kube-state-metrics'.
FOREIGN = frozenset(
    {
        "vllm:request_queue_time_seconds_bucket",
        "vllm:request_queue_time_seconds_count",
        "kube_pod_container_resource_requests",
        "vector",
    }
)


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return groups


def _rules(record: str) -> list[dict[str, Any]]:
    return [r for g in _groups() for r in g["rules"] if r["record"] == record]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (scripts/test installs it)", pytrace=False)
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_check_and_unit_tests_pass(tmp_path: Path) -> None:
    """`promtool check rules` (lint included) and `promtool test rules` pass."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _groups()}, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    checked = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_one_attainment_rule_per_model_at_its_slo_threshold() -> None:
    """vLLM models read the engine's queue-time histogram, llama.cpp models the activator's
    holds; the `le` read is the policy's queueWaitSeconds, and a bucket bound of that
    histogram (so the rule reads the threshold, not a neighbour)."""
    rules = {r["labels"]["model"]: r for r in _rules("scaler:slo_attainment:ratio_rate5m")}
    assert set(rules) == set(policies())
    for model, policy in policies().items():
        rule = rules[model]
        names = series_names(rule["expr"])
        (bound,) = set(re.findall(r'le=~"([0-9.]+)\(', rule["expr"]))
        assert float(bound) == policy.slo.queue_wait_seconds, model
        if policy.engine is Engine.VLLM:
            assert rule["labels"]["measured"] == "engine_queue"
            assert "vllm:request_queue_time_seconds_bucket|" in rule["expr"]  # __name__ regex
            assert float(bound) in VLLM_QUEUE_TIME_BUCKETS
        else:
            assert rule["labels"]["measured"] == "activator_hold"
            assert f"{metric_names.ACTIVATOR_WAIT}_bucket" in names
            assert float(bound) in WAIT_BUCKETS
        assert set(re.findall(r'model="([^"]+)"', rule["expr"])) == {model}


def test_targets_are_the_policies_percentiles() -> None:
    """scaler:slo_attainment_target:ratio is slo.percentile / 100 for every model."""
    targets = {
        r["labels"]["model"]: float(r["expr"].removeprefix("vector(").removesuffix(")"))
        for r in _rules("scaler:slo_attainment_target:ratio")
    }
    assert targets == {m: p.slo.percentile / 100 for m, p in policies().items()}


def test_memory_rule_selects_exactly_the_model_pods() -> None:
    """The pod regex names every policy's Deployment, in the policies' namespace."""
    (rule,) = _rules("scaler:memory_requested_gib:sum")
    (pods,) = re.findall(r'pod=~"\(([^)]+)\)', rule["expr"])
    assert set(pods.split("|")) == {p.target.deployment for p in policies().values()}
    (namespace,) = set(re.findall(r'namespace="([^"]+)"', rule["expr"]))
    assert {p.target.namespace for p in policies().values()} == {namespace}


def test_rules_read_only_known_series() -> None:
    """Every series read is scaler's own (scaler.metric_names) or the engine's / KSM's."""
    exported = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    exported -= {metric_names.MODEL_LABEL}
    exported |= {f"{metric_names.ACTIVATOR_WAIT}_{s}" for s in ("bucket", "count")}
    for group in _groups():
        for rule in group["rules"]:
            for name in series_names(rule["expr"]):
                assert name in exported or name in FOREIGN, f"{rule['record']}: {name}"
