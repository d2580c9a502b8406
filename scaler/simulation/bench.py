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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

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


def run_bench(
    files: Sequence[Path],
    policies: Sequence[str],
    *,
    policies_path: Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Run every policy (and the oracle) on every scenario file, in parallel processes."""
    names = list(policies) if ORACLE in policies else [*policies, ORACLE]
    prepared: dict[Path, PreparedScenario] = {}
    errors: list[str] = []
    for path in files:
        try:
            prepared[path] = prepare(path, policies_path=policies_path)
        except ScenarioLoadError as exc:
            errors.extend(exc.errors)
    if errors:
        raise BenchError("\n".join(errors))
    jobs = [(path, name) for path in files for name in names]
    reports: dict[tuple[Path, str], SimulationReport] = {}
    pool_size = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    policies_arg = str(policies_path) if policies_path is not None else None
    if pool_size == 1:
        for done, (path, name) in enumerate(jobs, start=1):
            reports[path, name] = _run_one(str(path), name, policies_arg)
            if progress is not None:
                progress(done, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=pool_size) as pool:
            futures: dict[Future[SimulationReport], tuple[Path, str]] = {
                pool.submit(_run_one, str(path), name, policies_arg): (path, name)
                for path, name in jobs
            }
            for done, future in enumerate(as_completed(futures), start=1):
                reports[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(jobs))
    shapes = [_shape(path, prepared[path], names, reports) for path in files]
    if "scaler" in names:
        shapes.sort(key=lambda s: _sort_key(s.score("scaler")))
    return BenchResult(tuple(shapes), tuple(names))


def _sort_key(score: PolicyScore | None) -> tuple[float, float]:
    if score is None:
        return (0.0, 0.0)
    # Worst last: a larger SLO shortfall weighs more than cost; then the cost ratio.
    return (-min(0.0, score.worst_slo_gap) * 100.0 + score.cost_ratio, score.cost_ratio)


def _shape(
    path: Path,
    prepared: PreparedScenario,
    names: Sequence[str],
    reports: Mapping[tuple[Path, str], SimulationReport],
) -> ShapeResult:
    oracle = reports[path, ORACLE]
    scores = []
    for name in names:
        report = reports[path, name]
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
    return ShapeResult(prepared.scenario.name, path, tuple(scores))


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
