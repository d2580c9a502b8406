"""PNG plots and an HTML page for ``scaler simulate --out DIR`` (matplotlib, Agg backend).

Per policy and model, one figure of four panels over time: demand (requests per minute),
desired vs ready replicas, queue depth, and the queue waits of the requests that arrived in
each 5-minute window (p50, p95 and max of those served; a mark where some were dropped)
against the SLO threshold. A model's figures share their axes across policies, so they
compare side by side. One figure across policies: cost (GiB-hours) against SLO attainment,
per model and in total. ``index.html`` shows the summary table (ordered as the terminal's:
by model, then policy) and, per model, the policies' figures side by side.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scaler.simulation.engine import SERVED, SimulationResult
from scaler.simulation.report import ModelReport, SimulationReport, slo_label

WAIT_WINDOW_SECONDS = 300.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLORS = tuple(f"C{i}" for i in range(10))  # the default colour cycle, by policy

FigureProgress = Callable[[int, int], None]
"""Called with (figures written, figures in all) after each PNG."""

ORACLE_NOTE = (
    "oracle: not a policy you can run but a yardstick. It knows every arrival in advance and "
    "starts each replica a worst-case cold start before it is needed, so no request waits; "
    "a real policy must buy that readiness as headroom (it can also cost less than the oracle "
    "by letting requests wait within the SLO)."
)
SLO_WAIT_NOTE = (
    "SLO wait: the queue wait at the model's SLO percentile, by nearest rank over all of its "
    "requests, a dropped request counting as an endless wait (inf); it is within the target "
    "exactly when the SLO attainment reaches the percentile. TTFT p95 is over served requests."
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Axis limits one model's figures share across policies."""

    hours: float
    requests_per_min: float
    replicas: float
    queue: float
    wait_s: float


def model_limits(results: Sequence[SimulationResult], model: int) -> Limits:
    """The axis limits that fit `model` under every one of `results`."""
    hours = max(r.duration for r in results) / 3600.0
    replicas, queue, wait, rpm = 1.0, 1.0, 1.0, 1.0
    for result in results:
        series = result.series[model]
        replicas = max(replicas, float(np.max(_desired(result, model), initial=0)))
        replicas = max(replicas, float(np.max(series.ready, initial=0)))
        queue = max(queue, float(np.max(series.queue, initial=0)))
        mine = result.model == model
        served = mine & (result.status == SERVED)
        waits = (result.start - result.arrival)[served]
        wait = max(wait, float(np.max(waits, initial=0)))
        counts, _ = np.histogram(result.arrival[mine], bins=_minute_edges(result))
        rpm = max(rpm, float(np.max(counts, initial=0)))
    threshold = results[0].policies[model].slo.queue_wait_seconds
    return Limits(hours, rpm, replicas, queue, max(wait, threshold))


def _minute_edges(result: SimulationResult) -> np.ndarray:
    return np.arange(0.0, result.duration + 60.0, 60.0)


def model_figure(
    result: SimulationResult, model: int, path: Path, limits: Limits | None = None
) -> None:
    """The four time panels of one model under one policy, written to `path`."""
    fig = model_plot(result, model, limits)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_plot(result: SimulationResult, model: int, limits: Limits | None = None) -> Figure:
    """The figure `model_figure` writes (the caller closes it)."""
    limits = limits or model_limits([result], model)
    name = result.models[model]
    hours = result.scrape_times / 3600.0
    series = result.series[model]
    mine = result.model == model
    arrivals = result.arrival[mine]
    fig, axes = plt.subplots(4, 1, figsize=(8, 8), sharex=True)
    fig.suptitle(f"{name} under {result.policy} ({result.scenario})")

    edges = _minute_edges(result)
    counts, _ = np.histogram(arrivals, bins=edges)
    axes[0].step(edges[:-1] / 3600.0, counts, where="post", color="tab:gray")
    axes[0].set_ylabel("requests/min")
    _count_axis(axes[0], limits.requests_per_min)

    desired = _desired(result, model)
    axes[1].step(hours, desired, where="post", label="desired", color="tab:orange")
    axes[1].step(hours, series.ready, where="post", label="ready", color="tab:green")
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper right")
    _count_axis(axes[1], limits.replicas)

    axes[2].step(hours, series.queue, where="post", color="tab:red")
    axes[2].set_ylabel("queue depth")
    _count_axis(axes[2], limits.queue)

    _wait_panel(axes[3], result, model, limits)
    axes[3].set_xlabel("hours")
    axes[3].set_xlim(0.0, limits.hours)
    for ax in axes:
        ax.grid(alpha=0.3)
    # The wait panel's legend below the figure: inside, it would hide the dropped marks.
    fig.legend(*axes[3].get_legend_handles_labels(), loc="lower center", ncols=5, fontsize=8)
    fig.tight_layout(rect=(0.0, 0.04, 1.0, 1.0))
    return fig


def _count_axis(ax: Axes, top: float) -> None:
    """A y axis of counts: integer ticks only, from 0 to a little above `top`."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.05 * top, 1.1 * top)


def _wait_panel(ax: Axes, result: SimulationResult, model: int, limits: Limits) -> None:
    """Per 5-minute window of arrivals: p50, p95 and max wait of the served requests, a
    gap where nothing arrived (no line across idle time), an x where requests were dropped."""
    mine = result.model == model
    arrivals = result.arrival[mine]
    wait = (result.start - result.arrival)[mine]
    served = result.status[mine] == SERVED
    edges = np.arange(0.0, result.duration + WAIT_WINDOW_SECONDS, WAIT_WINDOW_SECONDS)
    which = np.digitize(arrivals, edges) - 1
    windows = len(edges) - 1
    centers = (edges[:-1] + WAIT_WINDOW_SECONDS / 2) / 3600.0
    p50, p95, worst = (np.full(windows, np.nan) for _ in range(3))
    dropped = np.zeros(windows, dtype=bool)
    for k in range(windows):
        in_window = which == k
        values = wait[in_window & served]
        if len(values):
            p50[k], p95[k] = np.percentile(values, [50, 95])
            worst[k] = values.max()
        dropped[k] = bool(np.any(in_window & ~served))
    # NaN breaks the lines: windows without a served request are gaps, not interpolated.
    ax.plot(centers, p50, marker=".", label="p50 served")
    ax.plot(centers, p95, marker=".", label="p95 served")
    ax.plot(centers, worst, marker=".", label="max served", alpha=0.6)
    if dropped.any():
        ax.plot(
            centers[dropped],
            np.full(int(dropped.sum()), 0.95),
            "x",
            color="tab:red",
            transform=ax.get_xaxis_transform(),  # x in hours, y in axes fraction
            label="dropped",
        )
    ax.axhline(
        result.policies[model].slo.queue_wait_seconds,
        color="black",
        linestyle="--",
        label="SLO threshold",
    )
    ax.set_ylim(0.0, 1.15 * limits.wait_s)
    ax.set_ylabel("queue wait (s)")


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
    """GiB-hours against SLO attainment, one marker per policy (total and per model), the
    policies told apart by colour and shape in one legend (no labels on the points, which
    overlap where two policies cost the same), each model's SLO target as a dashed line."""
    fig = cost_plot(reports)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cost_plot(reports: Sequence[SimulationReport]) -> Figure:
    """The figure `cost_figure` writes (the caller closes it)."""
    models = list(reports[0].models) if reports else []
    panels: list[tuple[str, list[ModelReport]]] = [("total", [r.total for r in reports])]
    panels += [(m, [r.models[m] for r in reports]) for m in models]
    columns = 3
    rows = math.ceil((len(panels) + 1) / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    cells = list(grid.flat)
    for ax, (title, figures) in zip(cells, panels, strict=False):
        for i, (report, figure) in enumerate(zip(reports, figures, strict=True)):
            if figure.requests == 0:
                continue  # no SLO to place it on
            ax.scatter(
                figure.gib_hours,
                figure.slo_attainment,
                s=90 - 8 * i,  # later markers smaller: coincident points stay visible
                marker=MARKERS[i % len(MARKERS)],
                facecolors="none",
                edgecolors=COLORS[i % len(COLORS)],
                linewidths=1.6,
                label=report.policy,
            )
        target = figures[0].slo_percentile if figures else None
        if target is not None:
            ax.axhline(target / 100.0, color="black", linestyle="--", linewidth=0.8)
        label = slo_label(figures[0]) if figures else ""
        ax.set_title(f"{title} ({label})" if label else title, fontsize=10)
        ax.set_xlabel("cost (GiB-hours)")
        ax.set_ylabel("SLO attainment")
        ax.margins(x=0.15, y=0.15)
        ax.grid(alpha=0.3)
    legend_cell = cells[len(panels)]
    legend_cell.axis("off")
    handles, labels = cells[0].get_legend_handles_labels()
    legend_cell.legend(
        handles, labels, loc="center", title="policy (dashed: SLO target)", frameon=False
    )
    for ax in cells[len(panels) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def figure_count(results: Sequence[SimulationResult]) -> int:
    """How many PNGs `write_html_report` writes for `results`."""
    return 1 + sum(len(r.models) for r in results)


def write_html_report(
    results: Sequence[SimulationResult],
    reports: Sequence[SimulationReport],
    out: Path,
    *,
    progress: FigureProgress | None = None,
) -> Path:
    """Write every plot and ``index.html`` into `out`; returns the index path. `progress`
    hears of each PNG written (they take most of the time)."""
    out.mkdir(parents=True, exist_ok=True)
    total = figure_count(results)
    done = 0

    def written() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    cost_figure(reports, out / "cost-vs-slo.png")
    written()
    models = results[0].models if results else ()
    for m, model in enumerate(models):
        limits = model_limits(results, m)
        for result in results:
            model_figure(result, m, out / _png(result.policy, model), limits)
            written()
    index = out / "index.html"
    index.write_text(_page(results, reports), encoding="utf-8")
    return index


def _png(policy: str, model: str) -> str:
    return f"{policy}-{model}.png"


HEADERS = (
    "model",
    "policy",
    "requests",
    "served",
    "dropped",
    "SLO attainment",
    "SLO target",
    "SLO wait (s)",
    "TTFT p95, served (s)",
    "cost (GiB-h)",
    "cold starts",
    "scale events",
    "max replicas",
    "unplaceable (pod-s)",
)


def _row(model: str, report: SimulationReport, f: ModelReport, first: int) -> str:
    cells = [
        report.policy,
        f.requests,
        f.served,
        f.dropped,
        "-" if f.requests == 0 else f"{f.slo_attainment:.3f}",
        slo_label(f),
        _seconds(f.slo_wait_s) if f.slo_percentile is not None else "",
        _seconds(f.ttft_s.get("p95")),
        f"{f.gib_hours:.1f}",
        f.cold_starts,
        f.scale_events,
        f.max_replicas,
        f"{f.unplaceable_s:.0f}",
    ]
    head = f'<th rowspan="{first}" scope="rowgroup">{html.escape(model)}</th>' if first else ""
    return "<tr>" + head + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _page(results: Sequence[SimulationResult], reports: Sequence[SimulationReport]) -> str:
    models = list(reports[0].models) if reports else []
    groups = []
    for model in [*models, "total"]:
        rows = [
            _row(
                model, r, r.total if model == "total" else r.models[model], len(reports) * (i == 0)
            )
            for i, r in enumerate(reports)
        ]
        groups.append("<tbody>" + "\n".join(rows) + "</tbody>")
    header = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in HEADERS)
    sections = []
    for model in results[0].models if results else ():
        label = slo_label(reports[0].models[model]) if reports else ""
        figures = "\n".join(
            f'<figure><a href="{html.escape(_png(r.policy, model))}">'
            f'<img src="{html.escape(_png(r.policy, model))}" '
            f'alt="{html.escape(model)} under {html.escape(r.policy)}"></a>'
            f"<figcaption>{html.escape(r.policy)}</figcaption></figure>"
            for r in results
        )
        sections.append(
            f"<h2>{html.escape(model)} <small>SLO {html.escape(label)}</small></h2>\n"
            f'<div class="policies">\n{figures}\n</div>'
        )
    scenario = html.escape(reports[0].scenario) if reports else ""
    ran_oracle = any(r.policy == "oracle" for r in reports)
    oracle = f'<p class="note">{html.escape(ORACLE_NOTE)}</p>\n' if ran_oracle else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scaler simulate: {scenario}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td{{white-space:nowrap}}
tbody th{{text-align:left;vertical-align:top}}tbody{{border-top:2px solid #888}}
img{{width:100%}}p.note{{max-width:60em;color:#444}}h2 small{{font-weight:normal;color:#666}}
.policies{{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0.5em}}
figure{{margin:0}}figcaption{{text-align:center;font-weight:bold}}</style></head>
<body><h1>Scenario {scenario}</h1>
<img src="cost-vs-slo.png" alt="cost against SLO attainment, per model and in total"
style="max-width:1100px">
<table><thead><tr>{header}</tr></thead>
{"".join(groups)}
</table>
<p class="note">{html.escape(SLO_WAIT_NOTE)}</p>
{oracle}<p class="note">Per model below, one figure per policy, on the same axes: requests per
minute, desired and ready replicas, queue depth, and the waits of the requests that arrived
in each 5-minute window. Click a figure for its full size.</p>
{chr(10).join(sections)}
</body></html>
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"
