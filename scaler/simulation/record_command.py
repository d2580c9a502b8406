"""``scaler record`` and ``scaler calibrate``: thin command-line wrappers over history reading."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from scaler.core import ModelPolicy
from scaler.policy import PolicyLoadError, load_policies
from scaler.simulation.calibrate import (
    CalibrationError,
    calibrate_model,
    profile_priors,
    render_scenario,
)
from scaler.simulation.command import ProgressBar, default_scenario
from scaler.simulation.history import (
    NODE_ALLOCATABLE,
    HistoryReader,
    ModelHistory,
    scrape_interval,
)
from scaler.simulation.recording import rebuild
from scaler.simulation.traces import TraceError, TraceSource, read_trace, write_canonical
from scaler.sources.history import Grid, HistoryError, PrometheusHistory

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

UrlOption = Annotated[
    str,
    typer.Option(
        "--prometheus-url",
        help="Prometheus base URL, e.g. http://localhost:9090 (kubectl port-forward).",
    ),
]
SinceOption = Annotated[
    str | None, typer.Option(help="Range ending now (or at --end): 7d, 12h, 90m. Default 7d.")
]
StartOption = Annotated[
    str | None, typer.Option(help="Range start: RFC 3339 (2026-01-01T00:00:00Z) or Unix seconds.")
]
EndOption = Annotated[str | None, typer.Option(help="Range end (default: now); as --start.")]
StepOption = Annotated[
    str,
    typer.Option(help="Step of the range (e.g. 15s); auto: the models' scrape interval, measured."),
]
PoliciesOption = Annotated[
    Path | None,
    typer.Option(help="Policy folder naming the models and their matchers (default: policies/)."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=1)


def parse_duration(text: str, option: str) -> float:
    """Seconds of a Prometheus-style duration (``15s``, ``7d``); typer.Exit naming `option`."""
    found = _DURATION.match(text.strip())
    if found is None or float(found.group(1)) <= 0:
        raise _fail(f"{option}: {text!r} is not a duration (e.g. 15s, 90m, 12h, 7d)")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_time(text: str, option: str) -> float:
    """Unix seconds of an RFC 3339 time or a number; typer.Exit naming `option`."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(
            f"{option}: {text!r} is neither RFC 3339 (2026-01-01T00:00:00Z) nor Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _span(since: str | None, start: str | None, end: str | None) -> tuple[float, float]:
    """The range's (start, end) in Unix seconds; typer.Exit naming a bad option."""
    stop = parse_time(end, "--end") if end is not None else time.time()
    if start is not None and since is not None:
        raise _fail("give --since or --start, not both")
    begin = (
        parse_time(start, "--start")
        if start is not None
        else stop - parse_duration(since or "7d", "--since")
    )
    if stop <= begin:
        raise _fail(
            f"the range is empty: --end ({_iso(stop)}) is not after --start ({_iso(begin)})"
        )
    return begin, stop


# --step auto's step when the interval cannot be measured: Prometheus' own default scrape
# interval is 1m, kube-prometheus-stack's 30s; 15 s is the HPA's sync and a common choice.
_FALLBACK_STEP_SECONDS = 15.0


def _grid(
    url: str, span: tuple[float, float], step: str, policies: list[ModelPolicy]
) -> tuple[Grid, float | None]:
    """The range's steps, and the scrape interval measured on it (None: not measurable).

    ``--step auto`` steps at the measured interval: a step longer than the scrape spreads
    a scrape's arrivals thinner than they came, a shorter one lumps them into its first
    step. A step given is kept; the interval is still measured for calibrate's scenario.
    """
    begin, stop = span
    step_s = None if step == "auto" else parse_duration(step, "--step")
    try:
        # Its first query fails as clearly as _read's check would (an unreachable URL, an
        # answer that is not Prometheus'), so no check of its own.
        interval = scrape_interval(PrometheusHistory(url), policies, begin, stop)
    except HistoryError as exc:
        raise _fail(str(exc)) from None
    if step_s is None and interval is not None:
        step_s = interval
        typer.echo(f"step {step_s:g}s: the models' scrape interval, measured", err=True)
    elif step_s is None:
        step_s = _FALLBACK_STEP_SECONDS
        typer.echo(
            f"note: --step auto: no model has two samples of its output-token counter in the "
            f"first or last hour of {_iso(begin)} .. {_iso(stop)}, so the scrape interval "
            f"could not be measured; stepping at {step_s:g}s (pass --step to choose)",
            err=True,
        )
    count = int((stop - begin) // step_s) + 1
    if count < 2:
        raise _fail(
            f"the range {_iso(begin)} .. {_iso(stop)} is shorter than one step ({step_s:g}s)"
        )
    return Grid(begin, step_s, count), interval


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _policies(path: Path | None) -> list[ModelPolicy]:
    folder = path if path is not None else _default_policies()
    try:
        return list(load_policies(folder))
    except PolicyLoadError as exc:
        for error in exc.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None


def _read(
    url: str, grid: Grid, policies: list[ModelPolicy]
) -> tuple[list[ModelHistory], dict[str, float]]:
    with ProgressBar() as bar:
        bar.run("reading Prometheus")
        client = PrometheusHistory(url, progress=bar)
        reader = HistoryReader(client, grid)
        reader.plan(policies)
        try:
            client.check()
            histories = [reader.read(p) for p in policies]
            nodes = reader.nodes()
        except HistoryError as exc:
            raise _fail(str(exc)) from None
    return histories, nodes


def _no_data(grid: Grid, histories: list[ModelHistory]) -> typer.Exit:
    looked = "; ".join(q for h in histories for q in h.missing[:1])
    return _fail(
        f"no data for any model in {_iso(grid.start)} .. {_iso(grid.end)} (step {grid.step:g}s): "
        f"looked for {looked}. Check the range (--since/--start/--end), the policies' matchers, "
        "and that Prometheus scrapes the model servers"
    )


def record(
    prometheus_url: UrlOption,
    out: Annotated[Path, typer.Option(help="Canonical trace CSV to write.")],
    since: SinceOption = None,
    start: StartOption = None,
    end: EndOption = None,
    step: StepOption = "auto",
    policies: PoliciesOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the arrivals' spread inside each step.")] = 0,
) -> None:
    """Rebuild a canonical trace per model from a Prometheus range (engine, activator counters)."""
    span = _span(since, start, end)
    chosen = _policies(policies)
    grid, _ = _grid(prometheus_url, span, step, chosen)
    histories, _ = _read(prometheus_url, grid, chosen)
    if not any(h.seen for h in histories):
        raise _no_data(grid, histories)
    recorded = rebuild(histories, seed=seed)
    write_canonical(recorded.trace, out)
    hours = (grid.end - grid.start) / 3600.0
    for note in recorded.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"recorded {len(recorded.trace)} requests over {hours:.1f} h "
        f"({_iso(grid.start)} .. {_iso(grid.end)}; time 0 = {grid.start:.0f}) to {out}",
        err=True,
    )
    for model, count in recorded.requests.items():
        typer.echo(f"  {model}: {count} requests ({count / hours:.1f}/h)", err=True)


def _parse_nodes(text: str) -> dict[str, float]:
    nodes: dict[str, float] = {}
    for part in text.split(","):
        name, _, gib = part.strip().partition("=")
        try:
            value = float(gib)
        except ValueError:
            raise _fail(f"--nodes: {part!r} is not NAME=GiB (e.g. ms01-1=90,ms01-2=90)") from None
        if not name or value <= 0:
            raise _fail(f"--nodes: {part!r} is not NAME=GiB with GiB > 0")
        nodes[name] = value
    return nodes


def calibrate(
    prometheus_url: UrlOption,
    out: Annotated[Path, typer.Option(help="Scenario YAML to write.")],
    since: SinceOption = None,
    start: StartOption = None,
    end: EndOption = None,
    step: StepOption = "auto",
    policies: PoliciesOption = None,
    trace: Annotated[
        Path | None, typer.Option(help="The recorded trace (scaler record) to replay.")
    ] = None,
    nodes: Annotated[
        str | None,
        typer.Option(help="Nodes as NAME=GiB,... (default: kube-state-metrics' allocatable)."),
    ] = None,
    prior: Annotated[
        Path | None,
        typer.Option(
            help="Scenario whose profiles are the priors for figures with too few samples "
            "(default: the bundled simulations/homelab.yaml)."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="The scenario's name.")] = "calibrated",
    hpa_sync_period: Annotated[
        str,
        typer.Option(
            help="The cluster's HPA sync period (kube-controller-manager "
            "--horizontal-pod-autoscaler-sync-period; 15s unless it was set)."
        ),
    ] = "15s",
) -> None:
    """Fit a Scenario (nodes, per-model profiles, cold starts) to a Prometheus range."""
    span = _span(since, start, end)
    hpa_sync_s = parse_duration(hpa_sync_period, "--hpa-sync-period")
    chosen = _policies(policies)
    grid, interval = _grid(prometheus_url, span, step, chosen)
    try:
        priors = profile_priors(prior if prior is not None else default_scenario())
    except CalibrationError as exc:
        raise _fail(str(exc)) from None
    histories, found_nodes = _read(prometheus_url, grid, chosen)
    if not any(h.seen for h in histories):
        raise _no_data(grid, histories)
    if nodes is not None:
        node_gib, nodes_comment = _parse_nodes(nodes), "--nodes"
    elif found_nodes:
        node_gib = {n: b / 1024.0**3 for n, b in sorted(found_nodes.items())}
        nodes_comment = f'{NODE_ALLOCATABLE}{{resource="memory"}} (kube-state-metrics)'
    else:
        raise _fail(
            f'no nodes: {NODE_ALLOCATABLE}{{resource="memory"}} has no series in the range '
            "(kube-state-metrics not scraped?); pass --nodes NAME=GiB,..."
        )
    try:
        fitted = [calibrate_model(h, priors.get(h.model)) for h in histories]
    except CalibrationError as exc:
        raise _fail(str(exc)) from None
    base = out.resolve().parent
    folder = (policies if policies is not None else _default_policies()).resolve()
    text = render_scenario(
        name=name,
        description=f"Calibrated from {prometheus_url} over {_iso(grid.start)} .. {_iso(grid.end)}",
        policies=os.path.relpath(folder, base),
        nodes=node_gib,
        nodes_comment=nodes_comment,
        models=fitted,
        trace=None if trace is None else os.path.relpath(trace.resolve(), base),
        scrape_seconds=interval if interval is not None else grid.step,
        scrape_comment=(
            "measured: the median spacing of the models' samples"
            if interval is not None
            else "the --step (no model's samples to measure the interval on)"
        ),
        hpa_sync_seconds=hpa_sync_s,
        drain_seconds=_drain(trace, grid, [p.model for p in chosen]),
        header=[
            f"scaler calibrate: {prometheus_url}, {_iso(grid.start)} .. {_iso(grid.end)}, "
            f"step {grid.step:g}s.",
            "Each figure says whether it was fitted (95% interval, samples) or kept from the "
            "prior.",
        ],
    )
    out.write_text(text, encoding="utf-8")
    for history in histories:
        for note in history.notes:
            typer.echo(f"note: {note}", err=True)
        if not history.seen:
            typer.echo(f"note: {history.model}: no requests; its profile is the prior", err=True)
    typer.echo(f"wrote {out}", err=True)


def _drain(trace: Path | None, grid: Grid, models: list[str]) -> float:
    """Seconds from the trace's last arrival to the range's end (600 without a trace)."""
    if trace is None:
        return 600.0
    try:
        loaded = read_trace(TraceSource(trace), models)
    except TraceError as exc:
        raise _fail(str(exc)) from None
    return max(60.0, (grid.end - grid.start) - loaded.trace.duration)


def _default_policies() -> Path:
    bundled = default_scenario()
    return Path("policies") if bundled is None else bundled.parent.parent / "policies"
