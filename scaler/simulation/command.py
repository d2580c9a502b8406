"""``scaler simulate``, ``scaler tune`` and ``scaler bench``: thin command-line wrappers over
the simulator (``--shard``/``--merge``: scaler.simulation.shards)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Annotated, Self

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from scaler.simulation import openmetrics
from scaler.simulation.capacity import overloads
from scaler.simulation.comparison import POLICY_NAMES, make_autoscaler, policy_names
from scaler.simulation.engine import SimulationResult
from scaler.simulation.engine import simulate as run_simulation
from scaler.simulation.report import build_report, reports_json, summary_table
from scaler.simulation.scenario import (
    PreparedScenario,
    ScenarioLoadError,
    check_scenario,
    prepare,
)
from scaler.simulation.shards import MissingShardsError, Shard, ShardError, parse_shard
from scaler.simulation.tables import output_width, print_table

DEFAULT_SCENARIO = Path("simulations") / "homelab.yaml"
PROGRESS_AFTER_SECONDS = 2.0


def default_scenario() -> Path | None:
    """The bundled homelab scenario: in the current directory's checkout, else next to the
    package's source tree (editable installs); None when neither has it (a non-editable
    install run outside the checkout: the scenario, its traces and policies are not part of
    the installed package)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / DEFAULT_SCENARIO).is_file():
            return root / DEFAULT_SCENARIO
    return None


class ProgressBar:
    """A progress bar on stderr, shown only on a terminal and once a run passes ~2 s."""

    def __init__(
        self,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,  # used for testing
    ) -> None:
        self.console = console or Console(stderr=True)
        self._clock = clock
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = clock()
        self._label = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def run(self, label: str) -> None:
        """Start counting a new run called `label`."""
        self._label = label
        if self._progress is not None:
            self._task = self._progress.add_task(label, total=1.0)

    def __call__(self, now: float, end: float) -> None:
        if not self.console.is_terminal:
            return
        if self._progress is None:
            if self._clock() - self._started < PROGRESS_AFTER_SECONDS:
                return
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=1.0)
        if self._task is not None:
            self._progress.update(self._task, completed=now / end if end > 0 else 1.0)


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=1)


def _positive(value: float) -> float:
    if not (value > 0 and value < float("inf")):
        raise typer.BadParameter(f"must be a positive number, got {value}")
    return value


RateScaleOption = Annotated[
    float,
    typer.Option(
        metavar="F",
        callback=_positive,
        help="What-if: scale the arrival rate by F. Below 1 each request is kept with "
        "probability F; above 1 each is replayed floor(F) times, plus once more with "
        "probability F - floor(F), the copies up to one mean gap later. Seeded by the "
        "scenario; applied after --time-scale, to the scenario's traffic or the --trace "
        "files.",
    ),
]
TimeScaleOption = Annotated[
    float,
    typer.Option(
        metavar="F",
        callback=_positive,
        help="What-if: multiply every arrival time by F (2: the same requests over twice "
        "the time, half the rate; 0.5: twice the rate).",
    ),
]


def what_if(
    prepared: PreparedScenario, *, rate_scale: float, time_scale: float
) -> PreparedScenario:
    """`prepared` with its merged trace time- then rate-scaled (seeded by the scenario)."""
    if rate_scale == 1.0 and time_scale == 1.0:
        return prepared
    trace = prepared.trace.time_scaled(time_scale)
    if rate_scale != 1.0:
        trace = trace.rate_scaled(rate_scale, seed=prepared.scenario.seed)
    return replace(prepared, trace=trace)


def _prepare(
    scenario: Path | None,
    trace: Sequence[str],
    policies: Path | None,
    *,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
) -> PreparedScenario:
    path = scenario if scenario is not None else default_scenario()
    if path is None:
        raise _fail(
            f"no scenario given and no bundled {DEFAULT_SCENARIO} in {Path.cwd()}: run from "
            "the root of the scaler checkout, or pass --scenario FILE"
        )
    if not path.is_file():
        raise _fail(f"{path}: scenario file not found")
    try:
        prepared = prepare(path, trace_specs=trace, policies_path=policies)
    except ScenarioLoadError as exc:
        for error in exc.errors:
            typer.echo(error, err=True)
        raise typer.Exit(code=1) from None
    for warning in prepared.warnings:
        typer.echo(f"warning: {warning}", err=True)
    scaled = what_if(prepared, rate_scale=rate_scale, time_scale=time_scale)
    for overload in overloads(scaled):
        typer.echo(f"warning: {overload}", err=True)
    return scaled


def simulate(
    scenario: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Scenario YAML (default: the bundled simulations/homelab.yaml)."
        ),
    ] = None,
    trace: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FILE[:MODEL]",
            help="Replay FILE[:MODEL] instead of the scenario's traffic (repeatable; canonical "
            "CSV, Azure CSV or Mooncake JSONL; MODEL required for the single-model formats).",
        ),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Policy folder or file replacing the scenario's."),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[,NAME]",
            help=f"Policies to run: {', '.join(POLICY_NAMES)} (repeatable or comma list; "
            "default: all).",
        ),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json", metavar="FILE", help="Write the report(s) as JSON (one object, or a list)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Write PNG plots and index.html into this folder."),
    ] = None,
    openmetrics_file: Annotated[
        Path | None,
        typer.Option(
            "--openmetrics",
            metavar="FILE",
            help="Write the simulated series as OpenMetrics (for promtool backfill): the "
            "scaler run if it was simulated, else the first policy's (every tick run: none "
            "skipped while idle).",
        ),
    ] = None,
    rate_scale: RateScaleOption = 1.0,
    time_scale: TimeScaleOption = 1.0,
) -> None:
    """Replay a scenario through scaler and the baselines; print the summary table."""
    try:
        names = policy_names(baseline or [])
    except ValueError as exc:
        raise _fail(str(exc)) from None
    prepared = _prepare(
        scenario, trace or [], policies, rate_scale=rate_scale, time_scale=time_scale
    )
    results: list[SimulationResult] = []
    # The export carries every tick's decision (its sizing gauges move on idle ticks too):
    # with it, no tick is skipped. The reports are the same either way.
    fast_forward = openmetrics_file is None
    with ProgressBar() as bar:
        for name in names:
            bar.run(name)
            autoscaler = make_autoscaler(name, prepared)
            results.append(
                run_simulation(prepared, autoscaler, progress=bar, fast_forward=fast_forward)
            )
    reports = [build_report(r) for r in results]
    width = output_width()
    print_table(summary_table(reports, width=width), width=width)
    if json_file is not None:
        json_file.write_text(json.dumps(reports_json(reports), indent=2) + "\n", encoding="utf-8")
    if openmetrics_file is not None:
        exported = next((r for r in results if r.policy == "scaler"), results[0])
        openmetrics.write(exported, openmetrics_file)
    if out is not None:
        from scaler.simulation.plots import figure_count, write_html_report  # matplotlib: if asked

        count = figure_count(results)
        typer.echo(f"writing {count} plots and index.html into {out}", err=True)
        status = Console(stderr=True).status(f"plots: 0 of {count}")

        def plotted(done: int, total: int) -> None:
            status.update(f"plots: {done} of {total}")

        with status:
            index = write_html_report(results, reports, out, progress=plotted)
        typer.echo(f"report: {index}", err=True)


class ShardLog:
    """Progress of one shard as plain log lines on stderr, one per finished item: a pod's
    log is not a terminal, and `kubectl logs` should show how far each shard got."""

    def __init__(
        self,
        label: str,
        unit: str,
        *,
        clock: Callable[[], float] = time.monotonic,  # used for testing
    ) -> None:
        self.label = label
        self.unit = unit
        self._clock = clock
        self._started = clock()

    def start(self, total: int) -> None:
        """Log the shard's share of the work before the first item runs."""
        typer.echo(f"{self.label}: 0/{total} {self.unit} done", err=True)

    def __call__(self, done: float, total: float) -> None:
        elapsed = self._clock() - self._started
        typer.echo(
            f"{self.label}: {done:.0f}/{total:.0f} {self.unit} done ({elapsed:.1f} s)", err=True
        )


SHARD_HELP = (
    "Run only shard K of N (items i with i mod N = K of the deterministic work list) and "
    "write its results into --out DIR; /N takes K from JOB_COMPLETION_INDEX (set in the pods "
    "of a Kubernetes Indexed Job)."
)
MERGE_HELP_INCOMPLETE = (
    "With --merge: merge the shards present when some are missing (default: refuse)."
)


def _shard_mode(
    shard: str | None, out: Path | None, merge: Path | None, allow_incomplete: bool
) -> Shard | None:
    """Check that --shard/--out/--merge/--allow-incomplete go together; the parsed shard."""
    if shard is not None and merge is not None:
        raise _fail("--shard runs one shard, --merge merges them: give one of the two")
    if allow_incomplete and merge is None:
        raise _fail("--allow-incomplete applies to --merge only")
    if (shard is None) != (out is None):
        raise _fail("--shard K/N and --out DIR go together: a shard writes a shard file into DIR")
    if shard is None:
        return None
    try:
        return parse_shard(shard)
    except ShardError as exc:
        raise _fail(str(exc)) from None


def _refuse_with_merge(given: dict[str, object]) -> None:
    extra = [flag for flag, value in given.items() if value is not None]
    if extra:
        raise _fail(
            f"{', '.join(extra)}: not with --merge (the shard files carry the run's inputs)"
        )


def _merge_failure(exc: ShardError) -> typer.Exit:
    hint = (
        "\n(--allow-incomplete merges the shards present)"
        if isinstance(exc, MissingShardsError)
        else ""
    )
    return _fail(f"{exc}{hint}")


def _scenario_policies(scenario: object) -> Path | None:
    """The policy folder of the scenario a sharded tune ran (its shards name the scenario
    file), if that file is here too: the merge writes the chosen policy as an edit of its
    original there."""
    if not isinstance(scenario, dict) or not isinstance(scenario.get("path"), str):
        return None
    path = Path(scenario["path"])
    found, _ = check_scenario(path) if path.is_file() else (None, [])
    return path.parent / found.policies if found is not None else None


def tune(
    model: Annotated[
        str | None,
        typer.Option(metavar="MODEL", help="The model whose policy is tuned (not with --merge)."),
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Scenario YAML (default: the bundled simulations/homelab.yaml)."
        ),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Policy folder or file replacing the scenario's."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write the chosen policy YAML here (default: <model>.tuned.yaml)."
        ),
    ] = None,
    slo_target: Annotated[
        float | None,
        typer.Option(
            metavar="F",
            min=0.0,
            max=1.0,
            help="SLO attainment to reach (default: the policy's slo.percentile / 100; with "
            "--merge: the shards' target).",
        ),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="Candidates to evaluate (a grid, sampled if larger; default 24).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Parallel processes (default: os.cpu_count())."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Seed of the candidate sampling (default 0).")
    ] = None,
    rate_scale: RateScaleOption = 1.0,
    time_scale: TimeScaleOption = 1.0,
    shard: Annotated[str | None, typer.Option(metavar="K/N", help=SHARD_HELP)] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="With --shard: the folder the shard file goes to."),
    ] = None,
    merge: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Merge the shard files in this folder: print the frontier and write the "
            "chosen policy, exactly as a single run would.",
        ),
    ] = None,
    allow_incomplete: Annotated[bool, typer.Option(help=MERGE_HELP_INCOMPLETE)] = False,
) -> None:
    """Search a model's policy parameters; print the cost/SLO frontier; write the best policy."""
    from scaler.simulation.tune import (
        TuneError,
        TuneResult,
        frontier_table,
        merge_tune,
        policy_file,
        tune_policy,
        tune_shard,
        write_policy,
    )

    one_shard = _shard_mode(shard, out, merge, allow_incomplete)
    count = 24 if candidates is None else candidates
    sampling_seed = 0 if seed is None else seed
    result: TuneResult
    if merge is not None:
        _refuse_with_merge(
            {
                "--scenario": scenario,
                "--policies": policies,
                "--candidates": candidates,
                "--seed": seed,
                "--workers": workers,
                "--rate-scale": None if rate_scale == 1.0 else rate_scale,
                "--time-scale": None if time_scale == 1.0 else time_scale,
            }
        )
        try:
            merged = merge_tune(merge, slo_target=slo_target, allow_incomplete=allow_incomplete)
        except ShardError as exc:
            raise _merge_failure(exc) from None
        result = merged.result
        base = merged.candidates.base
        folder = _scenario_policies(merged.shards.inputs.get("scenario"))
        if model is not None and model != result.model:
            raise _fail(f"--model {model}, but the shards in {merge} tuned {result.model}")
        shards = merged.shards
        evaluated = sum(s.wall_s for s in shards.results.values())
        typer.echo(
            f"merged {len(shards.files)} of {shards.count} shards from {merge}: "
            f"{len(shards.results)} of {shards.items} candidates, "
            f"{evaluated:.1f} s of evaluation, slowest shard {shards.wall_s:.1f} s",
            err=True,
        )
        if shards.missing:
            typer.echo(
                f"warning: incomplete: shards {', '.join(map(str, shards.missing))} missing; "
                f"chosen among the {len(shards.results)} candidates evaluated",
                err=True,
            )
    else:
        if model is None:
            raise _fail("--model is required (unless --merge)")
        if output is not None and one_shard is not None:
            raise _fail("--output: a shard writes no policy (the merge does)")
        prepared = _prepare(scenario, [], policies, rate_scale=rate_scale, time_scale=time_scale)
        if model not in prepared.models:
            raise _fail(f"unknown model {model!r}; expected one of: {', '.join(prepared.models)}")
        base = prepared.policy(model)
        folder = policies or prepared.path.parent / prepared.scenario.policies
        if one_shard is not None and out is not None:
            from scaler.simulation.tune import candidate_list

            total = len(candidate_list(prepared.policy(model), count, sampling_seed).points)
            log = ShardLog(f"tune shard {one_shard} ({model})", "candidates")
            log.start(len(one_shard.items(total)))
            path = tune_shard(
                prepared,
                model,
                one_shard,
                out,
                slo_target=slo_target,
                candidates=count,
                workers=workers,
                seed=sampling_seed,
                progress=log,
            )
            typer.echo(f"wrote {path}", err=True)
            return
        with ProgressBar() as bar:
            bar.run(f"tune {model}")
            result = tune_policy(
                prepared,
                model,
                slo_target=slo_target,
                candidates=count,
                workers=workers,
                seed=sampling_seed,
                progress=bar,
            )
    print_table(frontier_table(result), width=output_width())
    if result.chosen is None:
        raise _fail(
            f"no candidate reached SLO attainment {result.slo_target:.3f}; "
            "nothing written (raise replicas.max or relax the SLO)"
        )
    target = output if output is not None else Path(f"{result.model}.tuned.yaml")
    original = policy_file(base, folder) if folder is not None else None
    try:
        write_policy(result.chosen.policy, target, source=result, original=original, base=base)
    except TuneError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {target}", err=True)


def bench(
    suite: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder of scenario files, one traffic shape each (default: the bundled "
            "simulations/bench/ plus simulations/homelab.yaml).",
        ),
    ] = None,
    scenario: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="A scenario file to add as a shape (repeatable; replaces the default).",
        ),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Policy folder or file replacing the scenarios'."),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[,NAME]",
            help=f"Policies to run: {', '.join(POLICY_NAMES)} (repeatable or comma list; "
            "default: all; the oracle always runs).",
        ),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Write the bench figures and reports as JSON."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Parallel processes (default: os.cpu_count())."),
    ] = None,
    shard: Annotated[str | None, typer.Option(metavar="K/N", help=SHARD_HELP)] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="With --shard: the folder the shard file goes to."),
    ] = None,
    merge: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Merge the shard files in this folder: print the tables (and --json) exactly "
            "as a single run would, but for each run's wall_s.",
        ),
    ] = None,
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            help="With --merge: merge the shards present when some are missing; shapes with "
            "a missing run are left out (default: refuse)."
        ),
    ] = False,
) -> None:
    """Every policy over a suite of traffic shapes: cost / oracle and SLO per model, worst last."""
    from scaler.simulation.bench import (
        DEFAULT_SUITE,
        BenchError,
        BenchResult,
        bench_tables,
        merge_bench,
        plan_bench,
        run_bench,
        run_bench_shard,
        suite_files,
    )

    one_shard = _shard_mode(shard, out, merge, allow_incomplete)
    result: BenchResult
    if merge is not None:
        _refuse_with_merge(
            {
                "--suite": suite,
                "--scenario": scenario,
                "--policies": policies,
                "--baseline": baseline,
                "--workers": workers,
            }
        )
        try:
            merged = merge_bench(merge, allow_incomplete=allow_incomplete)
        except ShardError as exc:
            raise _merge_failure(exc) from None
        result = merged.result
        shards = merged.shards
        typer.echo(
            f"merged {len(shards.files)} of {shards.count} shards from {merge}: "
            f"{len(shards.results)} of {shards.items} runs, slowest shard {shards.wall_s:.1f} s",
            err=True,
        )
        if merged.incomplete_shapes:
            typer.echo(
                f"warning: incomplete: shards {', '.join(map(str, shards.missing))} missing; "
                f"shapes left out: {', '.join(merged.incomplete_shapes)}",
                err=True,
            )
    else:
        try:
            names = policy_names(baseline or [])
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if json_file is not None and one_shard is not None:
            raise _fail("--json: a shard prints and writes no tables (the merge does)")
        chosen_suite = suite
        default = None
        if suite is None and not scenario:
            default = default_scenario()
            if default is None:
                raise _fail(
                    f"no bundled {DEFAULT_SCENARIO} in {Path.cwd()}: run from the root of the "
                    "scaler checkout, or pass --suite DIR / --scenario FILE"
                )
            chosen_suite = default.parent / DEFAULT_SUITE.name
        try:
            files = suite_files(chosen_suite, scenario or [], default)
            if one_shard is not None and out is not None:
                plan = plan_bench(files, names, policies_path=policies)
                log = ShardLog(f"bench shard {one_shard}", "runs")
                log.start(len(one_shard.items(len(plan.jobs))))
                path = run_bench_shard(
                    plan,
                    one_shard,
                    out,
                    workers=workers,
                    progress=lambda done, total: log(float(done), float(total)),
                )
                typer.echo(f"wrote {path}", err=True)
                return
            console = Console(stderr=True)
            status = console.status(f"bench: 0 of {len(files) * (len(names) + 1)} runs")

            def progress(done: int, total: int) -> None:
                status.update(f"bench: {done} of {total} runs")

            with status:
                result = run_bench(
                    files, names, policies_path=policies, workers=workers, progress=progress
                )
        except BenchError as exc:
            raise _fail(str(exc)) from None
    width = output_width()
    for table in bench_tables(result):
        print_table(table, width=width)
    if json_file is not None:
        json_file.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
