"""``scaler tune``: search one model's policy parameters on a scenario.

The search space (a grid; sampled down to the requested number of candidates, seeded, the
current policy always included):

- every per-replica target multiplied by one factor (0.5 .. 2: lower targets mean more
  replicas for the same load);
- the scale-up and scale-down stabilization windows;
- for on-demand models, the idle period before zero.

Each candidate runs the whole scenario under ``scaler`` (the other models keep their
policies, so placement pressure stays real), in parallel processes (spawned, at most
``os.cpu_count()``). Candidates are scored on the tuned model only: cost in GiB-hours and
SLO attainment. The chosen policy is the cheapest one whose attainment reaches the target
(the policy's ``slo.percentile`` / 100 unless given: p95 wait within the threshold is the
same as 95 % of requests within it); ties go to the higher attainment. The Pareto frontier
(no other candidate both cheaper and at least as good) is printed.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from scaler.core import ModelPolicy
from scaler.policy import check_file
from scaler.simulation.engine import simulate
from scaler.simulation.report import build_report
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.scenario import PreparedScenario

TARGET_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)
SCALE_UP_WINDOWS = (0.0, 30.0)
SCALE_DOWN_WINDOWS = (60.0, 180.0, 300.0, 600.0)
IDLE_SECONDS = (300.0, 600.0, 900.0, 1800.0)


class TuneError(Exception):
    """The tuned policy could not be written (it failed validation or the file write)."""


@dataclass(frozen=True, slots=True)
class Parameters:
    """One point of the search space."""

    target_factor: float
    scale_up_seconds: float
    scale_down_seconds: float
    idle_seconds: float | None  # None for always-on models

    def describe(self) -> str:
        """A short human label."""
        idle = "" if self.idle_seconds is None else f" idle {self.idle_seconds:g}s"
        return (
            f"targets x{self.target_factor:g} up {self.scale_up_seconds:g}s "
            f"down {self.scale_down_seconds:g}s{idle}"
        )


@dataclass(frozen=True)
class Candidate:
    """A candidate policy and how it did on the tuned model."""

    parameters: Parameters
    policy: ModelPolicy
    gib_hours: float
    slo_attainment: float
    slo_wait_s: float | None
    is_current: bool = False


@dataclass(frozen=True)
class TuneResult:
    """Every candidate evaluated, the frontier and the choice."""

    model: str
    slo_target: float
    candidates: tuple[Candidate, ...]
    frontier: tuple[Candidate, ...]
    chosen: Candidate | None


def apply(policy: ModelPolicy, parameters: Parameters) -> ModelPolicy:
    """`policy` with `parameters` applied (validated again by the schema)."""
    document: dict[str, Any] = policy.model_dump(by_alias=True, mode="json", exclude_none=True)
    document["targets"] = {k: v * parameters.target_factor for k, v in document["targets"].items()}
    document["scaleUp"]["stabilizationSeconds"] = parameters.scale_up_seconds
    document["scaleDown"]["stabilizationSeconds"] = parameters.scale_down_seconds
    if parameters.idle_seconds is not None and "scaleToZero" in document:
        document["scaleToZero"]["idleSeconds"] = parameters.idle_seconds
    return ModelPolicy.model_validate(document)


def current_parameters(policy: ModelPolicy) -> Parameters:
    """The point of the search space the policy already is."""
    return Parameters(
        1.0,
        policy.scale_up.stabilization_seconds,
        policy.scale_down.stabilization_seconds,
        policy.scale_to_zero.idle_seconds if policy.scale_to_zero else None,
    )


def search_space(policy: ModelPolicy, count: int, seed: int) -> list[Parameters]:
    """Up to `count` grid points, the current policy first, the rest sampled (seeded)."""
    idle: Sequence[float | None] = IDLE_SECONDS if policy.scale_to_zero else (None,)
    grid = [
        Parameters(f, up, down, i)
        for f, up, down, i in itertools.product(
            TARGET_FACTORS, SCALE_UP_WINDOWS, SCALE_DOWN_WINDOWS, idle
        )
    ]
    current = current_parameters(policy)
    others = [p for p in grid if p != current]
    random.Random(seed).shuffle(others)
    return [current, *others][: max(1, count)]


_SHARED: PreparedScenario | None = None  # the scenario, sent once to each worker process


def _init_worker(prepared: PreparedScenario) -> None:
    global _SHARED
    _SHARED = prepared


def _evaluate(model: str, policy: ModelPolicy) -> tuple[float, float, float | None]:
    """Run the shared scenario with `policy` for `model`: (GiB-hours, attainment, wait)."""
    assert _SHARED is not None, "worker not initialized"
    return evaluate(_SHARED, model, policy)


def evaluate(
    prepared: PreparedScenario, model: str, policy: ModelPolicy
) -> tuple[float, float, float | None]:
    """The tuned model's cost, SLO attainment and SLO-percentile wait under `policy`."""
    policies = tuple(policy if p.model == model else p for p in prepared.policies)
    run = replace(prepared, policies=policies)
    result = simulate(run, ScalerPolicy(policies, keep_decisions=False))
    figures = build_report(result).models[model]
    return figures.gib_hours, figures.slo_attainment, figures.slo_wait_s


def tune_policy(
    prepared: PreparedScenario,
    model: str,
    *,
    slo_target: float | None = None,
    candidates: int = 24,
    workers: int | None = None,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
) -> TuneResult:
    """Evaluate candidates in parallel and choose (see the module docstring)."""
    base = prepared.policy(model)
    target = base.slo.percentile / 100.0 if slo_target is None else slo_target
    points = search_space(base, candidates, seed)
    policies = [apply(base, p) for p in points]
    processes = max(1, min(workers or os.cpu_count() or 1, os.cpu_count() or 1, len(points)))
    scores: list[tuple[float, float, float | None] | None] = [None] * len(points)
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded parent
        initializer=_init_worker,
        initargs=(prepared,),
    ) as pool:
        futures = {pool.submit(_evaluate, model, p): i for i, p in enumerate(policies)}
        for done, future in enumerate(as_completed(futures), start=1):
            scores[futures[future]] = future.result()
            if progress is not None:
                progress(float(done), float(len(points)))
    evaluated = tuple(
        Candidate(point, policy, score[0], score[1], score[2], is_current=i == 0)
        for i, (point, policy, score) in enumerate(zip(points, policies, scores, strict=True))
        if score is not None
    )
    frontier = pareto_frontier(evaluated)
    feasible = [c for c in evaluated if c.slo_attainment >= target - 1e-12]
    chosen = min(feasible, key=lambda c: (c.gib_hours, -c.slo_attainment)) if feasible else None
    return TuneResult(model, target, evaluated, frontier, chosen)


def pareto_frontier(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Candidates no other beats on both cost (lower) and SLO attainment (higher), by cost."""
    ordered = sorted(candidates, key=lambda c: (c.gib_hours, -c.slo_attainment))
    frontier: list[Candidate] = []
    best = -math.inf
    for candidate in ordered:
        if candidate.slo_attainment > best:
            frontier.append(candidate)
            best = candidate.slo_attainment
    return tuple(frontier)


def frontier_table(result: TuneResult) -> Table:
    """The cost/SLO frontier as a table; the chosen and the current policy are marked."""
    table = Table(
        title=f"{result.model}: cost/SLO frontier of {len(result.candidates)} candidates "
        f"(target attainment {result.slo_target:.3f})"
    )
    for column in ("", "parameters", "GiB-h", "SLO att.", "wait @SLO pct"):
        table.add_column(column, justify="left" if column in ("", "parameters") else "right")
    shown = list(result.frontier)
    current = next((c for c in result.candidates if c.is_current), None)
    if current is not None and current not in shown:
        shown.append(current)
    for candidate in shown:
        marks = []
        if candidate is result.chosen:
            marks.append("chosen")
        if candidate.is_current:
            marks.append("current")
        wait = candidate.slo_wait_s
        table.add_row(
            ", ".join(marks),
            candidate.parameters.describe(),
            f"{candidate.gib_hours:.2f}",
            f"{candidate.slo_attainment:.3f}",
            "-" if wait is None else ("inf" if math.isinf(wait) else f"{wait:.1f}s"),
        )
    return table


def write_policy(policy: ModelPolicy, path: Path, *, source: TuneResult) -> None:
    """Write `policy` as YAML, validated by the policy loader before it replaces `path`."""
    document = policy.model_dump(by_alias=True, mode="json", exclude_none=True)
    chosen = source.chosen
    header = [
        f"# Tuned by `scaler tune --model {policy.model}`: {len(source.candidates)} candidates.",
    ]
    if chosen is not None:
        header.append(
            f"# Chosen: {chosen.parameters.describe()}; {chosen.gib_hours:.2f} GiB-h, "
            f"SLO attainment {chosen.slo_attainment:.3f} (target {source.slo_target:.3f})."
        )
    text = "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".yaml", delete=False
    ) as handle:
        handle.write(text)
    staged = Path(handle.name)
    try:
        checked, errors = check_file(staged)
        if checked is None or errors:
            raise TuneError(
                "the tuned policy failed validation: " + "; ".join(str(e) for e in errors)
            )
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
