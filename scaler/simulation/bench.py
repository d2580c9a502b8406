"""``scaler bench``: every policy over a suite of traffic shapes, scored against the oracle.

One scenario is one traffic shape (a trace, a synthetic day, a flash crowd...). Each policy
runs on each shape through the same engine as ``scaler simulate``; the figures a shape is
judged by are, per policy:

- ``cost_ratio``: total GiB-hours divided by the oracle's on the same shape (the oracle
  always runs: it is the yardstick);
- per model SLO attainment, and its gap to the oracle's (``slo_gap``: the policy's minus
  the oracle's; negative is worse);
- ``cold_starts`` per model.

Shapes are printed in order of scaler's cost ratio (when scaler ran), so the worst case comes
last, followed by a summary per policy over all shapes: the worst cost ratio and the worst
per-model SLO gap. The JSON (``--json``) carries the same figures plus each run's full
simulation report (the ``scaler simulate --json`` contract).

Sharded (``scaler bench --shard K/N``, a Kubernetes Indexed Job): the runs are listed shape
by shape, policy by policy (`BenchPlan`); shard K runs the runs j with j mod N == K and writes
their full reports to a shard file (`scaler.simulation.shards`); `merge_bench` reassembles
them in plan order, so the merged tables and JSON equal a single run's except each report's
``wall_s`` (which is the wall time of that run, wherever it ran).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from scaler.core import JsonValue
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import simulate
from scaler.simulation.report import SimulationReport, build_report
from scaler.simulation.scenario import (
    PreparedScenario,
    ScenarioLoadError,
    is_scenario_file,
    prepare,
)
from scaler.simulation.shards import Shard, ShardError, ShardSet, read_shards, write_shard

ORACLE = "oracle"

DEFAULT_SUITE = Path("simulations") / "bench"
"""The bundled shapes (relative to a checkout); the bundled homelab scenario is added to them."""


class BenchError(Exception):
    """A suite that cannot be run: no scenarios, or scenarios that do not load."""


@dataclass(frozen=True)
class ModelScore:
    """One model's figures for one policy on one shape."""

    slo_attainment: float
    slo_gap: float  # slo_attainment minus the oracle's (negative: worse than the oracle)
    gib_hours: float
    cold_starts: int
    requests: int


@dataclass(frozen=True)
class PolicyScore:
    """One policy on one shape."""

    policy: str
    gib_hours: float
    cost_ratio: float  # gib_hours / the oracle's (inf when the oracle paid nothing)
    slo_attainment: float
    models: Mapping[str, ModelScore]
    report: SimulationReport

    @property
    def worst_slo_gap(self) -> float:
        """The most negative per-model SLO gap to the oracle (0 without models)."""
        return min((m.slo_gap for m in self.models.values()), default=0.0)


@dataclass(frozen=True)
class ShapeResult:
    """Every policy's score on one shape."""

    shape: str
    path: Path
    scores: tuple[PolicyScore, ...]

    def score(self, policy: str) -> PolicyScore | None:
        """The score of `policy` on this shape, if it ran."""
        return next((s for s in self.scores if s.policy == policy), None)


@dataclass(frozen=True)
class BenchResult:
    """The whole bench: shapes (worst last for scaler) and the policies that ran."""

    shapes: tuple[ShapeResult, ...]
    policies: tuple[str, ...]

    def to_json(self) -> dict[str, JsonValue]:
        """The ``--json`` document."""
        return {
            "policies": list(self.policies),
            "shapes": [
                {
                    "shape": shape.shape,
                    "scenario": str(shape.path),
                    "policies": {
                        s.policy: {
                            "gib_hours": s.gib_hours,
                            "cost_ratio": _finite(s.cost_ratio),
                            "slo_attainment": s.slo_attainment,
                            "worst_slo_gap": s.worst_slo_gap,
                            "models": {
                                name: {
                                    "slo_attainment": m.slo_attainment,
                                    "slo_gap": m.slo_gap,
                                    "gib_hours": m.gib_hours,
                                    "cold_starts": m.cold_starts,
                                    "requests": m.requests,
                                }
                                for name, m in s.models.items()
                            },
                            "report": s.report.to_json(),
                        }
                        for s in shape.scores
                    },
                }
                for shape in self.shapes
            ],
            "summary": {
                policy: {
                    "worst_cost_ratio": _finite(self.worst_cost_ratio(policy)),
                    "worst_slo_gap": self.worst_slo_gap(policy),
                }
                for policy in self.policies
            },
        }

    def worst_cost_ratio(self, policy: str) -> float:
        """The highest cost ratio of `policy` over the shapes."""
        return max((s.cost_ratio for s in self._scores(policy)), default=0.0)

    def worst_slo_gap(self, policy: str) -> float:
        """The most negative per-model SLO gap of `policy` over the shapes."""
        return min((s.worst_slo_gap for s in self._scores(policy)), default=0.0)

    def _scores(self, policy: str) -> list[PolicyScore]:
        return [s for shape in self.shapes if (s := shape.score(policy)) is not None]


def _finite(value: float) -> float | None:
    return value if value != float("inf") else None


def suite_files(suite: Path | None, scenarios: Sequence[Path], default: Path | None) -> list[Path]:
    """The scenario files of a bench: `default` (the bundled homelab) and the suite folder's
    ``*.yaml`` scenarios, or exactly `scenarios` when given (with `suite` if also given).

    Raises BenchError when a path is missing or the result is empty.
    """
    files: list[Path] = []
    if suite is not None:
        if not suite.is_dir():
            raise BenchError(f"{suite}: suite folder not found")
        found = sorted(p for p in suite.iterdir() if is_scenario_file(p))
        if not found:
            raise BenchError(f"{suite}: no scenario files (kind: Scenario) in this folder")
        files.extend(found)
    for path in scenarios:
        if not path.is_file():
            raise BenchError(f"{path}: scenario file not found")
        files.append(path)
    if not scenarios and default is not None:
        files.insert(0, default)
    if not files:
        raise BenchError("no scenarios to run: pass --suite DIR or --scenario FILE")
    return files


def _run_one(path: str, policy: str, policies_path: str | None) -> SimulationReport:
    prepared = prepare(Path(path), policies_path=Path(policies_path) if policies_path else None)
    return build_report(simulate(prepared, make_autoscaler(policy, prepared)))


Progress = Callable[[int, int], None]
"""Called with (runs done, runs in all) as runs finish."""


@dataclass(frozen=True)
class BenchPlan:
    """The deterministic run list of a bench: run j is ``jobs[j]`` (shape index, policy).

    It depends only on the files, the policies and their order, so every shard of a sharded
    bench builds the same list and runs its own runs of it.
    """

    files: tuple[Path, ...]
    shapes: tuple[str, ...]  # each file's scenario name
    digests: tuple[str, ...]  # each file's PreparedScenario.digest()
    policies: tuple[str, ...]  # the oracle included
    policies_path: Path | None

    @property
    def jobs(self) -> list[tuple[int, str]]:
        """Every (shape index, policy) run, shape by shape."""
        return [(f, name) for f in range(len(self.files)) for name in self.policies]


def plan_bench(
    files: Sequence[Path], policies: Sequence[str], *, policies_path: Path | None = None
) -> BenchPlan:
    """Load every scenario (BenchError listing every problem) and list the runs."""
    names = list(policies) if ORACLE in policies else [*policies, ORACLE]
    prepared: list[PreparedScenario] = []
    errors: list[str] = []
    for path in files:
        try:
            prepared.append(prepare(path, policies_path=policies_path))
        except ScenarioLoadError as exc:
            errors.extend(exc.errors)
    if errors:
        raise BenchError("\n".join(errors))
    return BenchPlan(
        tuple(files),
        tuple(p.scenario.name for p in prepared),
        tuple(p.digest() for p in prepared),
        tuple(names),
        policies_path,
    )


def run_jobs(
    plan: BenchPlan,
    items: Sequence[int],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[int, SimulationReport]:
    """Run the runs `items` of the plan in parallel processes (here for one worker)."""
    jobs = plan.jobs
    reports: dict[int, SimulationReport] = {}
    pool_size = max(1, min(workers or os.cpu_count() or 1, len(items)))
    policies_arg = str(plan.policies_path) if plan.policies_path is not None else None

    def arguments(item: int) -> tuple[str, str, str | None]:
        shape, name = jobs[item]
        return str(plan.files[shape]), name, policies_arg

    if pool_size == 1:
        for done, item in enumerate(items, start=1):
            reports[item] = _run_one(*arguments(item))
            if progress is not None:
                progress(done, len(items))
        return reports
    with ProcessPoolExecutor(max_workers=pool_size) as pool:
        futures: dict[Future[SimulationReport], int] = {
            pool.submit(_run_one, *arguments(item)): item for item in items
        }
        for done, future in enumerate(as_completed(futures), start=1):
            reports[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(items))
    return reports


def assemble(plan: BenchPlan, reports: Mapping[int, SimulationReport]) -> BenchResult:
    """The bench from the runs' reports: the shapes whose runs are all there, worst last.

    Pure, and independent of the order the runs finished in: a merged sharded bench equals a
    single run's (but for each report's ``wall_s``).
    """
    jobs = plan.jobs
    by_run = {jobs[item]: report for item, report in reports.items()}
    shapes = [
        _shape(
            plan.files[f], plan.shapes[f], plan.policies, {n: by_run[f, n] for n in plan.policies}
        )
        for f in range(len(plan.files))
        if all((f, n) in by_run for n in plan.policies)
    ]
    if "scaler" in plan.policies:
        shapes.sort(key=lambda s: _sort_key(s.score("scaler")))
    return BenchResult(tuple(shapes), plan.policies)


def run_bench(
    files: Sequence[Path],
    policies: Sequence[str],
    *,
    policies_path: Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Run every policy (and the oracle) on every scenario file, in parallel processes."""
    plan = plan_bench(files, policies, policies_path=policies_path)
    items = range(len(plan.jobs))
    return assemble(plan, run_jobs(plan, items, workers=workers, progress=progress))


SHARD_KIND = "bench"


def run_bench_shard(
    plan: BenchPlan,
    shard: Shard,
    directory: Path,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Run shard K of N of the plan's runs and write its shard file; its path."""
    started = time.perf_counter()
    items = shard.items(len(plan.jobs))
    reports = run_jobs(plan, items, workers=workers, progress=progress)
    inputs: dict[str, JsonValue] = {
        "files": [str(p) for p in plan.files],
        "shapes": list(plan.shapes),
        "digests": list(plan.digests),
        "policies": list(plan.policies),
        "policies_path": str(plan.policies_path) if plan.policies_path is not None else None,
    }
    results: list[dict[str, JsonValue]] = [
        {"item": item, "report": report.to_record()} for item, report in sorted(reports.items())
    ]
    return write_shard(
        directory,
        SHARD_KIND,
        shard,
        items=len(plan.jobs),
        inputs=inputs,
        results=results,
        wall_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class BenchMerge:
    """A merged sharded bench: the result a single run gives, the shards, and the shapes
    left out for want of a run (only when an incomplete set was allowed)."""

    result: BenchResult
    shards: ShardSet[SimulationReport]
    incomplete_shapes: tuple[str, ...]


def _report(record: Mapping[str, Any]) -> SimulationReport:
    return SimulationReport.from_record(record["report"])


def merge_bench(directory: Path, *, allow_incomplete: bool = False) -> BenchMerge:
    """Merge the bench shard files of `directory` into the single-run result.

    Raises ShardError (see `read_shards`); with `allow_incomplete`, a shape missing any of
    its runs is left out (named in `incomplete_shapes`).
    """
    shards = read_shards(directory, SHARD_KIND, _report, allow_incomplete=allow_incomplete)
    inputs = shards.inputs
    try:
        files, shapes, digests, names = (
            _strings(inputs[key]) for key in ("files", "shapes", "digests", "policies")
        )
        policies_path = inputs["policies_path"]
        if len({len(files), len(shapes), len(digests)}) != 1:
            raise ValueError("files, shapes and digests differ in length")
        if len(files) * len(names) != shards.items:
            raise ValueError(f"{len(files)} shapes x {len(names)} policies != {shards.items} runs")
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardError(f"{shards.files[0].path}: corrupt shard inputs: {exc}") from None
    plan = BenchPlan(
        tuple(Path(f) for f in files),
        tuple(shapes),
        tuple(digests),
        tuple(names),
        Path(policies_path) if isinstance(policies_path, str) else None,
    )
    result = assemble(plan, shards.results)
    present = {shape.path for shape in result.shapes}
    left_out = tuple(s for f, s in zip(plan.files, plan.shapes, strict=True) if f not in present)
    return BenchMerge(result, shards, left_out)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{value!r} is not a list of strings")
    return [str(v) for v in value]


def _sort_key(score: PolicyScore | None) -> tuple[float, float]:
    if score is None:
        return (0.0, 0.0)
    # Worst last: a larger SLO shortfall weighs more than cost; then the cost ratio.
    return (-min(0.0, score.worst_slo_gap) * 100.0 + score.cost_ratio, score.cost_ratio)


def _shape(
    path: Path,
    shape: str,
    names: Sequence[str],
    reports: Mapping[str, SimulationReport],
) -> ShapeResult:
    oracle = reports[ORACLE]
    scores = []
    for name in names:
        report = reports[name]
        models = {
            model: ModelScore(
                slo_attainment=figures.slo_attainment,
                slo_gap=round(figures.slo_attainment - oracle.models[model].slo_attainment, 6),
                gib_hours=figures.gib_hours,
                cold_starts=figures.cold_starts,
                requests=figures.requests,
            )
            for model, figures in report.models.items()
        }
        base = oracle.total.gib_hours
        ratio = report.total.gib_hours / base if base > 0 else float("inf")
        scores.append(
            PolicyScore(
                policy=name,
                gib_hours=report.total.gib_hours,
                cost_ratio=round(ratio, 4),
                slo_attainment=report.total.slo_attainment,
                models=models,
                report=report,
            )
        )
    return ShapeResult(shape, path, tuple(scores))


def bench_tables(result: BenchResult) -> list[Table]:
    """One table per shape (worst for scaler last), then the summary over all shapes."""
    tables = []
    for shape in result.shapes:
        models = list(shape.scores[0].models) if shape.scores else []
        table = Table(title=f"{shape.shape} ({shape.path})")
        table.add_column("policy")
        table.add_column("GiB-h", justify="right")
        table.add_column("cost / oracle", justify="right")
        table.add_column("SLO", justify="right")
        for model in models:
            table.add_column(f"{model} SLO (Δ oracle) / cold", justify="right")
        for score in shape.scores:
            cells = [
                score.policy,
                f"{score.gib_hours:.1f}",
                _ratio(score.cost_ratio),
                f"{score.slo_attainment:.3f}",
            ]
            for model in models:
                m = score.models[model]
                gap = "" if score.policy == ORACLE else f" ({m.slo_gap:+.3f})"
                cells.append(f"{m.slo_attainment:.3f}{gap} / {m.cold_starts}")
            table.add_row(*cells)
        tables.append(table)
    summary = Table(title=f"summary over {len(result.shapes)} shapes")
    summary.add_column("policy")
    summary.add_column("worst cost / oracle", justify="right")
    summary.add_column("worst per-model SLO Δ oracle", justify="right")
    for policy in result.policies:
        summary.add_row(
            policy,
            _ratio(result.worst_cost_ratio(policy)),
            f"{result.worst_slo_gap(policy):+.3f}",
        )
    tables.append(summary)
    return tables


def _ratio(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.3f}x"
