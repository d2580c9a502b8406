"""PNG plots and an HTML page for ``scaler simulate --out DIR`` (matplotlib, Agg backend).

Per policy and model, one figure of four panels over time: demand (requests per minute),
desired vs ready replicas, queue depth, and queue-wait percentiles (p50, p95, max per
5-minute window of arrivals) against the SLO threshold. One figure across policies: cost
(GiB-hours) against SLO attainment. ``index.html`` shows them all with the summary table.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np

from scaler.simulation.engine import SERVED, SimulationResult
from scaler.simulation.report import SimulationReport

WAIT_WINDOW_SECONDS = 300.0


def model_figure(result: SimulationResult, model: int, path: Path) -> None:
    """The four time panels of one model under one policy, written to `path`."""
    name = result.models[model]
    hours = result.scrape_times / 3600.0
    series = result.series[model]
    mine = result.model == model
    arrivals = result.arrival[mine]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    fig.suptitle(f"{name} under {result.policy} ({result.scenario})")

    edges = np.arange(0.0, result.duration + 60.0, 60.0)
    counts, _ = np.histogram(arrivals, bins=edges)
    axes[0].step(edges[:-1] / 3600.0, counts, where="post", color="tab:gray")
    axes[0].set_ylabel("requests/min")

    desired = _desired(result, model)
    axes[1].step(hours, desired, where="post", label="desired", color="tab:orange")
    axes[1].step(hours, series.ready, where="post", label="ready", color="tab:green")
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper right")

    axes[2].step(hours, series.queue, where="post", color="tab:red")
    axes[2].set_ylabel("queue depth")

    wait = (result.start - result.arrival)[mine]
    served = result.status[mine] == SERVED
    window_edges = np.arange(0.0, result.duration + WAIT_WINDOW_SECONDS, WAIT_WINDOW_SECONDS)
    which = np.digitize(arrivals, window_edges) - 1
    centers, p50, p95, worst = [], [], [], []
    for k in range(len(window_edges) - 1):
        in_window = (which == k) & served
        if in_window.any():
            values = wait[in_window]
            centers.append((window_edges[k] + WAIT_WINDOW_SECONDS / 2) / 3600.0)
            p50.append(float(np.percentile(values, 50)))
            p95.append(float(np.percentile(values, 95)))
            worst.append(float(values.max()))
    axes[3].plot(centers, p50, marker=".", label="p50")
    axes[3].plot(centers, p95, marker=".", label="p95")
    axes[3].plot(centers, worst, marker=".", label="max", alpha=0.6)
    axes[3].axhline(
        result.policies[model].slo.queue_wait_seconds, color="black", linestyle="--", label="SLO"
    )
    axes[3].set_ylabel("queue wait (s)")
    axes[3].set_xlabel("hours")
    axes[3].legend(loc="upper right")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _desired(result: SimulationResult, model: int) -> np.ndarray:
    """Desired replicas at each scrape: the decision's for scaler, spec.replicas otherwise."""
    name = result.models[model]
    decisions = [d for d in result.decisions if d.model == name]
    if not decisions:
        return result.series[model].spec
    stamps = np.array([d.time for d in decisions])
    values = np.array([d.desired_replicas for d in decisions])
    index = np.searchsorted(stamps, result.scrape_times, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], result.series[model].spec)


def cost_figure(reports: Sequence[SimulationReport], path: Path) -> None:
    """GiB-hours against SLO attainment, one point per policy (total and per model)."""
    models = list(reports[0].models) if reports else []
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(4 * (len(models) + 1), 4))
    panels = [("total", [r.total for r in reports])] + [
        (m, [r.models[m] for r in reports]) for m in models
    ]
    for ax, (title, figures) in zip(np.atleast_1d(axes), panels, strict=True):
        for report, figure in zip(reports, figures, strict=True):
            ax.scatter(figure.gib_hours, figure.slo_attainment, s=40)
            ax.annotate(report.policy, (figure.gib_hours, figure.slo_attainment), fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("GiB-hours")
        ax.set_ylabel("SLO attainment")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_html_report(
    results: Sequence[SimulationResult], reports: Sequence[SimulationReport], out: Path
) -> Path:
    """Write every plot and ``index.html`` into `out`; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    cost_figure(reports, out / "cost-vs-slo.png")
    for result in results:
        for m, model in enumerate(result.models):
            model_figure(result, m, out / f"{result.policy}-{model}.png")
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                r.policy,
                model,
                f.requests,
                f.served,
                f.dropped,
                f"{f.slo_attainment:.3f}",
                _seconds(f.queue_wait_s.get("p95")),
                _seconds(f.ttft_s.get("p95")),
                f"{f.gib_hours:.1f}",
                f.cold_starts,
                f.scale_events,
                f.max_replicas,
                f"{f.unplaceable_s:.0f}",
            )
        )
        + "</tr>"
        for r in reports
        for model, f in [*r.models.items(), ("total", r.total)]
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "policy",
            "model",
            "requests",
            "served",
            "dropped",
            "SLO attainment",
            "wait p95",
            "TTFT p95",
            "GiB-h",
            "cold starts",
            "scale events",
            "max replicas",
            "unplaceable s",
        )
    )
    models = results[0].models if results else ()
    sections = "\n".join(
        f"<h2>{html.escape(model)}</h2>\n"
        + "\n".join(
            f'<figure><img src="{html.escape(r.policy)}-{html.escape(model)}.png" '
            f'alt="{html.escape(model)} under {html.escape(r.policy)}"></figure>'
            for r in results
        )
        for model in models
    )
    scenario = html.escape(reports[0].scenario) if reports else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scaler simulate: {scenario}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}
figure{{display:inline-block;margin:0.5em}}</style></head>
<body><h1>Scenario {scenario}</h1>
<img src="cost-vs-slo.png" alt="cost against SLO attainment">
<table><tr>{header}</tr>
{rows}
</table>
{sections}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"
