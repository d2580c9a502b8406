"""The Grafana dashboards: well-formed, current, and built only from exported names.

No Grafana exists here, so the JSON is checked structurally (known panel types, unique
refIds, layout inside 24 columns, variables the queries use are defined); the queries
themselves run against a real Prometheus in test_queries_prometheus.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaler import metric_names
from scaler.cli import app
from scaler.dashboards import BUILDERS, DEFAULT_OUT, render_all
from tests.builders import ROOT
from tests.deploy.promql import series_names

COMMITTED = ROOT / DEFAULT_OUT
PANEL_TYPES = frozenset({"row", "timeseries", "stat"})
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__range", "__range_s", "__interval"})
CLUSTER_SERIES = frozenset(
    {
        "container_memory_working_set_bytes",  # the kubelet's cAdvisor
        "container_cpu_usage_seconds_total",
        "kube_pod_container_resource_requests",  # kube-state-metrics
        "kube_pod_status_ready",
    }
)
"""Series the dashboards read that the cluster's own exporters provide, not scaler."""
RECORDED = frozenset(
    rule["record"]
    for group in yaml.safe_load(
        (ROOT / "manifests" / "monitoring" / "prometheus-rule-slo-cost.yaml").read_text()
    )["spec"]["groups"]
    for rule in group["rules"]
)
"""What scaler's recording rules record (prometheus-rule-slo-cost.yaml)."""


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in render_all().items()}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard["panels"])


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


DASHBOARD_NAMES = sorted(BUILDERS)


def test_committed_dashboards_are_what_the_code_renders() -> None:
    """manifests/monitoring/dashboards/*.json regenerate byte-identically."""
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED.glob("*.json")}
    assert committed == render_all(), "run: scaler dashboards"


def test_rendering_is_deterministic() -> None:
    """Two renders give the same bytes (no ids, times or ordering that drift)."""
    assert render_all() == render_all()


def test_scaler_dashboards_writes_the_files_and_check_passes(tmp_path: Path) -> None:
    """`scaler dashboards --out DIR` writes one file per dashboard; --check then exits 0."""
    runner = CliRunner()
    written = runner.invoke(app, ["dashboards", "--out", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in tmp_path.iterdir()) == DASHBOARD_NAMES
    checked = runner.invoke(app, ["dashboards", "--out", str(tmp_path), "--check"])
    assert checked.exit_code == 0, checked.output


def test_scaler_dashboards_check_fails_on_an_edited_file(tmp_path: Path) -> None:
    """--check exits 1 and names the file when a dashboard differs from the code."""
    runner = CliRunner()
    runner.invoke(app, ["dashboards", "--out", str(tmp_path)])
    edited = tmp_path / DASHBOARD_NAMES[0]
    edited.write_text(edited.read_text().replace("scaler", "scaIer", 1))
    checked = runner.invoke(app, ["dashboards", "--out", str(tmp_path), "--check"])
    assert checked.exit_code == 1
    assert edited.name in checked.output


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_panels_have_known_types_and_fit_the_grid(name: str) -> None:
    """Only row/timeseries/stat panels; every gridPos inside 24 columns, non-empty."""
    for panel in _panels(_dashboards()[name]):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert grid["w"] >= 1
        assert grid["h"] >= 1
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_query_panel_has_unique_ref_ids_and_the_prometheus_datasource(name: str) -> None:
    """Each non-row panel has targets with unique refIds, a legend, the ${datasource}."""
    for panel in _panels(_dashboards()[name]):
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs)), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        if panel["type"] == "timeseries":
            assert panel["options"]["legend"]["showLegend"] is True, panel["title"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_queries_use_only_defined_variables(name: str) -> None:
    """Every $variable in a query is a dashboard variable or a Grafana built-in."""
    dashboard = _dashboards()[name]
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_VARIABLES
    for expr in _exprs(dashboard):
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert variable in defined, f"{name}: ${variable} in {expr}"


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_queries_read_only_exported_metric_names(name: str) -> None:
    """Every series a panel reads is one scaler.metric_names exports, one of scaler's
    recording rules records, or a named cAdvisor / kube-state-metrics series."""
    exported = {
        value
        for key, value in vars(metric_names).items()
        if key.isupper() and isinstance(value, str)
    } - {metric_names.MODEL_LABEL}
    histograms = {
        metric_names.COLD_START_DURATION,
        metric_names.PROMETHEUS_QUERY_DURATION,
        metric_names.API_REQUEST_DURATION,
        metric_names.ACTIVATOR_WAIT,
    }
    exported |= {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "count", "sum")}
    exported |= CLUSTER_SERIES | RECORDED
    for expr in _exprs(_dashboards()[name]):
        names = series_names(re.sub(r"\$\{?\w+\}?", "1m", expr))
        assert names, expr
        assert names <= exported, f"{names - exported} in {expr}"


def test_dashboards_cover_what_an_operator_asks() -> None:
    """Overview: signals vs targets, replicas, reasons, cold starts, activation queue; model
    detail: a single-value model variable; adapter health: queries, API, leader."""
    dashboards = {d["uid"]: d for d in _dashboards().values()}
    titles = {uid: {p["title"] for p in d["panels"]} for uid, d in dashboards.items()}
    assert {
        "Signals against their targets (replicas needed)",
        "Replicas: desired, current, ready",
        "Decisions by reason",
        "Cold starts",
        "Time to ready after a cold start",
        "Activation queue",
    } <= titles["scaler-policy-overview"]
    (model,) = [
        v for v in dashboards["scaler-model-detail"]["templating"]["list"] if v["name"] == "model"
    ]
    assert model["multi"] is False
    assert {
        "Query latency by signal",
        "Query errors by signal",
        "Leaders",
        "API latency (p95) by route and code",
        "Activator",
    } <= titles["scaler-adapter-health"]
    overview = dashboards["scaler-policy-overview"]["panels"]
    overview_rows = [p for p in overview if p["type"] == "row"]
    assert [r.get("repeat") for r in overview_rows] == [None, "model"]
