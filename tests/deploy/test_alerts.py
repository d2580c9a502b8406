"""The alerts (PrometheusRule) pass their promtool unit tests and query real metric names;
the plain scrape configs are valid Prometheus configuration.

promtool reads rule files, not PrometheusRule objects: each test extracts `spec.groups` into
a temporary `rules.yaml` next to a copy of `prometheus-rule.test.yaml` and runs
`promtool test rules` / `promtool check config` (the real binaries, Prometheus 2.42).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scaler import metric_names
from scaler.core import Reason
from tests.deploy.objects import MANIFESTS, policies
from tests.deploy.promql import series_names

MONITORING = MANIFESTS / "monitoring"
RULE = MONITORING / "prometheus-rule.yaml"
RULE_TESTS = MONITORING / "prometheus-rule.test.yaml"

# Series scaler does not export but the alerts read: the scrape's own and kube-state-metrics'.
FOREIGN_METRICS = frozenset({"up", "kube_horizontalpodautoscaler_spec_max_replicas"})


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: apt-get install -y --no-install-recommends "
            "prometheus (scripts/test does it)",
            pytrace=False,
        )
    return binary


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _write_rules(directory: Path) -> Path:
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return rules


def test_rule_unit_tests_pass(tmp_path: Path) -> None:
    """`promtool test rules` passes on the rule groups of the PrometheusRule."""
    _write_rules(tmp_path)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    """Each alert appears in at least one alert_rule_test that expects it to fire."""
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in _rules()} == tested


def test_alerts_read_only_metrics_scaler_exports() -> None:
    """Every scaler_* series an alert reads is a name from scaler.metric_names."""
    exported = {
        value
        for name, value in vars(metric_names).items()
        if name.isupper() and isinstance(value, str)
    } - {metric_names.MODEL_LABEL}
    for rule in _rules():
        names = series_names(rule["expr"])
        assert names, rule["alert"]
        for name in names:
            assert name in exported or name in FOREIGN_METRICS, f"{rule['alert']}: {name}"


def test_stale_alert_threshold_is_the_policies_staleness_limit() -> None:
    """ScalerMetricsStale fires past data.staleAfterSeconds, the limit every policy uses."""
    (rule,) = [r for r in _rules() if r["alert"] == "ScalerMetricsStale"]
    threshold = float(rule["expr"].rsplit(">", 1)[1])
    assert {p.data.stale_after_seconds for p in policies().values()} == {threshold}


def test_plain_scrape_configs_are_valid_prometheus_config(tmp_path: Path) -> None:
    """scrape-configs.yaml, as the scrape_configs of a prometheus.yml, passes promtool."""
    snippet = yaml.safe_load((MONITORING / "scrape-configs.yaml").read_text())
    config = tmp_path / "prometheus.yml"
    # Debian's Prometheus (2.42+ds) is built without Kubernetes service discovery, so the
    # discovery block is swapped for a static target before promtool checks the rest
    # (relabeling, scheme, authorization, TLS); the discovery block itself is checked below.
    for job in snippet["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs"):
            assert sd["role"] == "endpoints"
            assert sd["namespaces"]["names"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}, **snippet}))
    result = subprocess.run(
        [_promtool(), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_scrape_config_attaches_model_and_namespace_to_model_series() -> None:
    """The model job copies the Service's `model` label and the namespace onto the series."""
    jobs = yaml.safe_load((MONITORING / "scrape-configs.yaml").read_text())["scrape_configs"]
    (models,) = [j for j in jobs if j["job_name"] == "cortex-models"]
    targets = {
        r["target_label"]: r["source_labels"]
        for r in models["relabel_configs"]
        if "target_label" in r
    }
    assert targets["model"] == ["__meta_kubernetes_service_label_model"]
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]


def test_alerts_match_real_decision_reasons() -> None:
    """Every reason="..." an alert selects is a value of scaler.core.Reason."""
    selected = {
        reason for rule in _rules() for reason in re.findall(r'reason="([^"]+)"', rule["expr"])
    }
    assert selected
    assert selected <= {reason.value for reason in Reason}
