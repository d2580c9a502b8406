"""The summary in every output: one SLO wait (terminal, HTML, JSON), "-" without requests,
tables that fit the terminal, and the --out report (figures, progress, layout)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import pyplot as plt
from rich.console import Console

from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import SERVED, SimulationResult, simulate
from scaler.simulation.plots import (
    cost_plot,
    figure_count,
    model_limits,
    model_plot,
    write_html_report,
)
from scaler.simulation.report import SimulationReport, build_report, summary_table
from scaler.simulation.tables import natural_width, output_width
from scaler.simulation.traces import TokenSizes, merge, poisson
from tests.builders import make_policy
from tests.simulation.scenario_builders import make_scenario

MODELS = ("tinyllama", "mistral-7b", "mixtral-8x7b")


@pytest.fixture(scope="module")
def results() -> list[SimulationResult]:
    """tinyllama busy, mistral-7b without a single request, Mixtral woken twice; under
    scaler (holds Mixtral's requests while it wakes), hpa (drops them: never leaves 0) and
    the oracle."""
    policies = [make_policy(m) for m in MODELS]
    traffic = merge(
        [
            poisson("tinyllama", rate=0.3, duration=1500, sizes=TokenSizes(300, 80), seed=1),
            poisson("mixtral-8x7b", rate=0.004, duration=1500, sizes=TokenSizes(300, 80), seed=2),
        ]
    )
    prepared = make_scenario(traffic, policies=policies, drain_seconds=300)
    return [
        simulate(prepared, make_autoscaler(name, prepared)) for name in ("scaler", "hpa", "oracle")
    ]


@pytest.fixture(scope="module")
def reports(results: list[SimulationResult]) -> list[SimulationReport]:
    return [build_report(r) for r in results]


def render(reports: list[SimulationReport], width: int | None) -> str:
    stream = io.StringIO()
    table = summary_table(reports, width=width)
    Console(file=stream, width=width or natural_width(table)).print(table)
    return stream.getvalue()


def nearest_rank(result: SimulationResult, model: int, percentile: float) -> float:
    """The SLO's own definition, written out: nearest rank, dropped requests endless."""
    mine = result.model == model
    waits = np.where(result.status[mine] == SERVED, (result.start - result.arrival)[mine], np.inf)
    ranked = np.sort(waits)
    return float(ranked[math.ceil(percentile / 100 * len(ranked)) - 1])


def test_the_slo_wait_is_nearest_rank_over_all_requests_with_dropped_ones_endless(
    results: list[SimulationResult], reports: list[SimulationReport]
) -> None:
    """The report's SLO wait is exactly that definition; hpa's Mixtral (all dropped) is inf."""
    for result, report in zip(results, reports, strict=True):
        for m, name in enumerate(result.models):
            figures = report.models[name]
            if figures.requests:
                assert figures.slo_wait_s == nearest_rank(result, m, figures.slo_percentile or 0)
    assert reports[1].models["mixtral-8x7b"].dropped == reports[1].models["mixtral-8x7b"].requests
    assert reports[1].models["mixtral-8x7b"].slo_wait_s == math.inf


def test_json_carries_the_slo_wait_its_percentile_and_threshold_in_strict_json(
    reports: list[SimulationReport],
) -> None:
    """New keys slo_percentile, slo_threshold_s, slo_wait_s; an endless wait is null (strict
    JSON has no Infinity); the total has none (each model has its own SLO)."""
    documents: list[Any] = [r.to_json() for r in reports]
    json.dumps(documents, allow_nan=False)
    scaler, hpa, _ = documents
    mixtral = hpa["models"]["mixtral-8x7b"]
    assert mixtral["slo_percentile"] == 99.5
    assert mixtral["slo_threshold_s"] == 90.0
    assert mixtral["slo_wait_s"] is None
    assert scaler["models"]["tinyllama"]["slo_wait_s"] == reports[0].models["tinyllama"].slo_wait_s
    assert scaler["total"]["slo_percentile"] is None


def test_terminal_and_html_show_the_same_slo_wait_and_its_target(
    results: list[SimulationResult], reports: list[SimulationReport], tmp_path: Path
) -> None:
    """The terminal's SLO wait column and the HTML's "SLO wait (s)" are the same figure
    (no served-only p95 under the name "wait"), and both show the SLO target."""
    text = render(reports, None)
    page = write_html_report(results, reports, tmp_path).read_text()
    assert "p99.5 ≤ 90s" in text
    assert "p99.5 ≤ 90s" in page
    assert "wait p95" not in page
    assert "SLO wait (s)" in page
    tiny_wait = reports[1].models["tinyllama"].slo_wait_s
    assert tiny_wait is not None
    assert f"{tiny_wait:.1f}s" in text
    assert f"<td>{tiny_wait:.1f}</td>" in page
    assert "<td>inf</td>" in page  # hpa's Mixtral
    assert re.search(r"hpa\s+│\s+\d+\s+│\s+0\s+│\s+\d+\s+│\s+0\.000\s+│\s+inf", text)


def test_a_model_without_requests_shows_no_slo_attainment(
    results: list[SimulationResult], reports: list[SimulationReport], tmp_path: Path
) -> None:
    """mistral-7b had no requests: "-" in the terminal and the HTML, not "1.000"."""
    (line,) = [row for row in render(reports, None).splitlines() if "mistral-7b" in row]
    cells = [c.strip() for c in line.split("│")]
    assert cells[3] == "0"  # requests
    assert cells[6] == "-"  # SLO att.
    page = write_html_report(results, reports, tmp_path).read_text()
    row = page.split('scope="rowgroup">mistral-7b</th>')[1].split("</tr>")[0]
    assert "<td>0</td><td>0</td><td>0</td><td>-</td>" in row


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_summary_fits_the_terminal_leaving_out_the_least_useful_columns(
    reports: list[SimulationReport], width: int
) -> None:
    """No line wider than the terminal; the key columns are kept; the caption names the
    columns left out; at its natural width nothing is left out."""
    text = render(reports, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    header = " ".join(lines[:5])
    for kept in ("model", "policy", "requests", "dropped", "SLO", "GiB-h"):
        assert kept in header
    assert "0.000" in text  # hpa's Mixtral attainment is whole, not wrapped
    if width < natural_width(summary_table(reports)):
        assert f"not shown at {width} columns:" in text
        assert "unplaceable s" in text  # the first one left out
    full = render(reports, None)
    assert "not shown" not in full
    assert "TTFT p95" in full


def test_tables_take_the_terminal_width_on_a_terminal_and_their_own_when_piped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """COLUMNS or a terminal decide the width; piped without COLUMNS, no limit (None)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_width(Console(file=io.StringIO(), force_terminal=False)) is None
    assert output_width(Console(file=io.StringIO(), force_terminal=True, width=91)) == 91
    monkeypatch.setenv("COLUMNS", "84")
    assert output_width(Console(file=io.StringIO(), force_terminal=False)) == 84


def test_replica_and_count_axes_have_whole_ticks_only(results: list[SimulationResult]) -> None:
    """Requests/min, replicas and queue depth are counts: no tick at 1.5."""
    fig = model_plot(results[0], 2)  # Mixtral: 0..2 replicas
    try:
        for ax in fig.axes[:3]:
            ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
            assert ticks
            assert all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)


def test_the_wait_panel_leaves_gaps_where_no_request_arrived(
    results: list[SimulationResult],
) -> None:
    """Mixtral's sparse arrivals: windows without one are NaN (a gap), not a line drawn
    across the idle time; hpa's dropped requests are marked."""
    scaler, hpa, _ = results
    fig = model_plot(scaler, 2)
    try:
        p50 = fig.axes[3].get_lines()[0].get_ydata()
        assert np.isnan(np.asarray(p50, dtype=float)).any()
        assert not np.isnan(np.asarray(p50, dtype=float)).all()
    finally:
        plt.close(fig)
    fig = model_plot(hpa, 2)
    try:
        labels = [line.get_label() for line in fig.axes[3].get_lines()]
        assert "dropped" in labels
    finally:
        plt.close(fig)


def test_a_models_figures_share_their_axes_across_policies(
    results: list[SimulationResult],
) -> None:
    """Side by side, the same scale: limits from every policy's run."""
    limits = model_limits(results, 2)
    figures = [model_plot(r, 2, limits) for r in results]
    try:
        assert figures[0].axes[1].get_ylim() == figures[1].axes[1].get_ylim()
        assert figures[0].axes[3].get_ylim() == figures[1].axes[3].get_ylim()
    finally:
        for fig in figures:
            plt.close(fig)


def test_the_cost_chart_names_policies_in_a_legend_not_on_the_points(
    reports: list[SimulationReport],
) -> None:
    """No text labels on the points (they overlapped and were clipped at the edges): one
    legend of every policy, and every label inside the figure."""
    fig = cost_plot(reports)
    try:
        assert all(not ax.texts for ax in fig.axes)
        (legend,) = [legend for ax in fig.axes if (legend := ax.get_legend()) is not None]
        assert [t.get_text() for t in legend.get_texts()] == ["scaler", "hpa", "oracle"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        box = fig.bbox
        for ax in fig.axes:
            for text in [ax.title, ax.xaxis.label, ax.yaxis.label]:
                if text.get_text():
                    extent = text.get_window_extent(renderer)
                    assert box.x0 <= extent.x0
                    assert extent.x1 <= box.x1 + 1
    finally:
        plt.close(fig)


def test_the_html_is_ordered_by_model_with_units_an_oracle_note_and_policies_side_by_side(
    results: list[SimulationResult], reports: list[SimulationReport], tmp_path: Path
) -> None:
    """Rows grouped by model as in the terminal; units in the headers; a note on what the
    oracle is; per model the policies' figures in one grid; progress hears of every PNG."""
    heard: list[tuple[int, int]] = []
    page = write_html_report(
        results, reports, tmp_path, progress=lambda d, t: heard.append((d, t))
    ).read_text()
    assert heard == [(i, figure_count(results)) for i in range(1, figure_count(results) + 1)]
    assert figure_count(results) == 1 + 3 * 3
    groups = re.findall(r'scope="rowgroup">([^<]+)</th>', page)
    assert groups == [*MODELS, "total"]
    for header in ("cost (GiB-h)", "SLO wait (s)", "SLO target", "unplaceable (pod-s)"):
        assert f">{header}</th>" in page
    notes = page.split("</table>")[1].split("<h2>")[0]
    assert "oracle: not a policy you can run but a yardstick" in notes
    assert "SLO wait: the queue wait at the model" in notes
    section = page.split("<h2>mixtral-8x7b")[1].split("<h2>")[0]
    assert '<div class="policies">' in section
    assert section.index("scaler-mixtral-8x7b.png") < section.index("hpa-mixtral-8x7b.png")
