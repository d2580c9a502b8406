"""``scaler tune``: search one model's policy parameters on a scenario.

The search space (a grid; sampled down to the requested number of candidates, seeded, the
current policy always included):

- policies with a ``sizing`` section (the shipped ones): the percentile the sizing aims at
  (``sizing.aimPercentile``, 98 .. 99.9: the queueing model misses the SLO by a margin that
  depends on the traffic, so the aim that just meets it is found on the traffic itself) and
  the cap on the learned scale-down hold (``scaleDown.stabilizationSeconds``); their targets
  are only the fallback and stay as they are;
- policies without one: every per-replica target multiplied by one factor (0.5 .. 2: lower
  targets mean more replicas for the same load), and the scale-up and scale-down
  stabilization windows;
- for on-demand models, the idle period before zero (the keep-alive's cap).

Each candidate runs the whole scenario under ``scaler`` (the other models keep their
policies, so placement pressure stays real), in parallel processes (spawned, at most
``os.cpu_count()``). Candidates are scored on the tuned model only: cost in GiB-hours and
SLO attainment. The chosen policy is the cheapest one whose attainment reaches the target
(the policy's ``slo.percentile`` / 100 unless given: p95 wait within the threshold is the
same as 95 % of requests within it); ties go to the higher attainment. The Pareto frontier
(no other candidate both cheaper and at least as good) is printed.

Sharded (a Kubernetes Indexed Job, ``scaler tune --shard K/N`` in each pod): the candidate
list depends only on the policy, the requested count and the seed, so every shard builds the
same list, evaluates the items i with i mod N == K and writes them to a shard file
(`scaler.simulation.shards`); `merge_tune` rebuilds the list from the shards' inputs and
chooses from the scores in item order, exactly as `tune_policy` does, so the frontier and
the chosen policy's bytes are those of a single run.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import random
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from scaler.core import JsonValue, ModelPolicy
from scaler.policy import check_file, policy_files
from scaler.policy.edit import EditError, changed_fields, edit_values, policy_yaml
from scaler.simulation.engine import simulate
from scaler.simulation.report import build_report
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.scenario import PreparedScenario
from scaler.simulation.shards import Shard, ShardError, ShardSet, read_shards, write_shard

TARGET_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)
SCALE_UP_WINDOWS = (0.0, 30.0)
SCALE_DOWN_WINDOWS = (60.0, 180.0, 300.0, 600.0)
IDLE_SECONDS = (300.0, 600.0, 900.0, 1800.0)
AIM_PERCENTILES = (98.0, 99.0, 99.5, 99.8, 99.9)
HOLD_CAPS = (60.0, 150.0, 300.0)


class TuneError(Exception):
    """The tuned policy could not be written (it failed validation or the file write)."""


@dataclass(frozen=True, slots=True)
class Parameters:
    """One point of the search space."""

    target_factor: float
    scale_up_seconds: float
    scale_down_seconds: float
    idle_seconds: float | None  # None for always-on models
    aim_percentile: float | None = None  # sized policies: sizing.aimPercentile (None: the SLO's)

    def describe(self) -> str:
        """A short human label."""
        idle = "" if self.idle_seconds is None else f" idle {self.idle_seconds:g}s"
        if self.aim_percentile is not None:
            return f"aim p{self.aim_percentile:g} down {self.scale_down_seconds:g}s{idle}"
        return (
            f"targets x{self.target_factor:g} up {self.scale_up_seconds:g}s "
            f"down {self.scale_down_seconds:g}s{idle}"
        )

    def as_list(self) -> list[JsonValue]:
        """The point as a shard file stores it (`_point` reads it back)."""
        return [
            self.target_factor,
            self.scale_up_seconds,
            self.scale_down_seconds,
            self.idle_seconds,
            self.aim_percentile,
        ]


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


COUNT_TARGETS = frozenset({"queueDepth", "inflightRequests"})
"""Targets that count requests (waiting, or in a slot): whole numbers, at least 1."""


def operator_value(target: str, value: float) -> float:
    """A scaled target as an operator would write it: a whole number of requests for the
    counts (half up, at least 1: ``inflightRequests`` 3 × 1.5 is 5, not 4.5), two
    significant digits for the rates (9 × 0.75 tokens/s is 6.8). Pure."""
    if target in COUNT_TARGETS:
        return float(max(1, math.floor(value + 0.5)))
    return float(f"{value:.2g}")


def apply(policy: ModelPolicy, parameters: Parameters) -> ModelPolicy:
    """`policy` with `parameters` applied, each target rounded as an operator would write
    it (`operator_value`: the candidate evaluated is the policy written), validated again."""
    document: dict[str, Any] = policy.model_dump(by_alias=True, mode="json", exclude_none=True)
    document["targets"] = {
        k: v if parameters.target_factor == 1.0 else operator_value(k, v * parameters.target_factor)
        for k, v in document["targets"].items()
    }
    aim = parameters.aim_percentile
    sizing = document.get("sizing")
    # The SLO's percentile is the default aim: written only when it differs, or was written.
    if (
        aim is not None
        and sizing is not None
        and ("aimPercentile" in sizing or aim != policy.slo.percentile)
    ):
        sizing["aimPercentile"] = aim
    document["scaleUp"]["stabilizationSeconds"] = parameters.scale_up_seconds
    document["scaleDown"]["stabilizationSeconds"] = parameters.scale_down_seconds
    if parameters.idle_seconds is not None and "scaleToZero" in document:
        document["scaleToZero"]["idleSeconds"] = parameters.idle_seconds
    return ModelPolicy.model_validate(document)


def current_parameters(policy: ModelPolicy) -> Parameters:
    """The point of the search space the policy already is."""
    aim = None
    if policy.sizing is not None:
        aim = policy.sizing.aim_percentile or policy.slo.percentile
    return Parameters(
        1.0,
        policy.scale_up.stabilization_seconds,
        policy.scale_down.stabilization_seconds,
        policy.scale_to_zero.idle_seconds if policy.scale_to_zero else None,
        aim,
    )


def search_space(policy: ModelPolicy, count: int, seed: int) -> list[Parameters]:
    """Up to `count` grid points, the current policy first, the rest sampled (seeded)."""
    idle: Sequence[float | None] = IDLE_SECONDS if policy.scale_to_zero else (None,)
    if policy.sizing is not None:
        up = policy.scale_up.stabilization_seconds
        grid = [
            Parameters(1.0, up, down, i, aim)
            for aim, down, i in itertools.product(AIM_PERCENTILES, HOLD_CAPS, idle)
        ]
    else:
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


@dataclass(frozen=True, slots=True)
class Score:
    """How one candidate did on the tuned model, and what evaluating it cost."""

    gib_hours: float
    slo_attainment: float
    slo_wait_s: float | None
    wall_s: float  # wall time of the evaluation (not part of the result: sizing only)


@dataclass(frozen=True)
class CandidateList:
    """The deterministic candidate list of a run: item i is (points[i], policies[i]).

    It depends only on the model's policy, the requested count and the seed, so every shard
    of a sharded run builds the same list and runs its own items of it.
    """

    model: str
    base: ModelPolicy
    points: tuple[Parameters, ...]
    policies: tuple[ModelPolicy, ...]


def candidate_list(base: ModelPolicy, count: int, seed: int) -> CandidateList:
    """The candidates of tuning `base`: `search_space` with each point applied."""
    points = tuple(search_space(base, count, seed))
    return CandidateList(base.model, base, points, tuple(apply(base, p) for p in points))


_SHARED: PreparedScenario | None = None  # the scenario, sent once to each worker process


def _init_worker(prepared: PreparedScenario) -> None:
    global _SHARED
    _SHARED = prepared


def _evaluate(model: str, policy: ModelPolicy) -> Score:
    """Run the shared scenario with `policy` for `model` (in a worker process)."""
    assert _SHARED is not None, "worker not initialized"
    return _timed(_SHARED, model, policy)


def _timed(prepared: PreparedScenario, model: str, policy: ModelPolicy) -> Score:
    started = time.perf_counter()
    gib_hours, attainment, wait = evaluate(prepared, model, policy)
    return Score(gib_hours, attainment, wait, time.perf_counter() - started)


def evaluate(
    prepared: PreparedScenario, model: str, policy: ModelPolicy
) -> tuple[float, float, float | None]:
    """The tuned model's cost, SLO attainment and SLO-percentile wait under `policy`."""
    policies = tuple(policy if p.model == model else p for p in prepared.policies)
    run = replace(prepared, policies=policies)
    result = simulate(run, ScalerPolicy.for_scenario(run, keep_decisions=False))
    figures = build_report(result).models[model]
    return figures.gib_hours, figures.slo_attainment, figures.slo_wait_s


def evaluate_candidates(
    prepared: PreparedScenario,
    candidates: CandidateList,
    items: Sequence[int],
    *,
    workers: int | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> dict[int, Score]:
    """Score the candidates `items` of the list, in parallel processes (in this one for a
    single worker); `progress` gets (done, len(items)) as each finishes."""
    model = candidates.model
    cpus = os.cpu_count() or 1
    processes = max(1, min(workers or cpus, cpus, len(items)))
    scores: dict[int, Score] = {}
    if processes == 1:
        for done, item in enumerate(items, start=1):
            scores[item] = _timed(prepared, model, candidates.policies[item])
            if progress is not None:
                progress(float(done), float(len(items)))
        return scores
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded parent
        initializer=_init_worker,
        initargs=(prepared,),
    ) as pool:
        futures = {pool.submit(_evaluate, model, candidates.policies[i]): i for i in items}
        for done, future in enumerate(as_completed(futures), start=1):
            scores[futures[future]] = future.result()
            if progress is not None:
                progress(float(done), float(len(items)))
    return scores


def choose(candidates: CandidateList, target: float, scores: Mapping[int, Score]) -> TuneResult:
    """The frontier and the choice among the scored items (in item order, so that ties
    break the same way however the items were split). Pure."""
    evaluated = tuple(
        Candidate(
            candidates.points[i],
            candidates.policies[i],
            score.gib_hours,
            score.slo_attainment,
            score.slo_wait_s,
            is_current=i == 0,
        )
        for i, score in sorted(scores.items())
    )
    frontier = pareto_frontier(evaluated)
    feasible = [c for c in evaluated if c.slo_attainment >= target - 1e-12]
    chosen = min(feasible, key=lambda c: (c.gib_hours, -c.slo_attainment)) if feasible else None
    return TuneResult(candidates.model, target, evaluated, frontier, chosen)


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
    listed = candidate_list(base, candidates, seed)
    items = range(len(listed.points))
    scores = evaluate_candidates(prepared, listed, items, workers=workers, progress=progress)
    return choose(listed, target, scores)


SHARD_KIND = "tune"


def tune_shard(
    prepared: PreparedScenario,
    model: str,
    shard: Shard,
    directory: Path,
    *,
    slo_target: float | None = None,
    candidates: int = 24,
    workers: int | None = None,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
) -> Path:
    """Evaluate shard K of N of the candidate list and write its shard file; its path."""
    started = time.perf_counter()
    base = prepared.policy(model)
    target = base.slo.percentile / 100.0 if slo_target is None else slo_target
    listed = candidate_list(base, candidates, seed)
    items = shard.items(len(listed.points))
    scores = evaluate_candidates(prepared, listed, items, workers=workers, progress=progress)
    inputs: dict[str, JsonValue] = {
        "model": model,
        "seed": seed,
        "candidates": candidates,
        "slo_target": target,
        "policy": base.model_dump(by_alias=True, mode="json", exclude_none=True),
        "points": [p.as_list() for p in listed.points],
        "scenario": {
            "name": prepared.scenario.name,
            "path": str(prepared.path),
            "digest": prepared.digest(),
        },
    }
    results: list[dict[str, JsonValue]] = [
        {
            "item": item,
            "gib_hours": score.gib_hours,
            "slo_attainment": score.slo_attainment,
            "slo_wait_s": score.slo_wait_s,
            "wall_s": round(score.wall_s, 3),
        }
        for item, score in sorted(scores.items())
    ]
    return write_shard(
        directory,
        SHARD_KIND,
        shard,
        items=len(listed.points),
        inputs=inputs,
        results=results,
        wall_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class TuneMerge:
    """A merged sharded run: the result a single run gives, and the shards it came from."""

    result: TuneResult
    shards: ShardSet[Score]
    candidates: CandidateList


def _score(record: Mapping[str, Any]) -> Score:
    wait = record["slo_wait_s"]
    return Score(
        float(record["gib_hours"]),
        float(record["slo_attainment"]),
        None if wait is None else float(wait),
        float(record["wall_s"]),
    )


def merge_tune(
    directory: Path, *, slo_target: float | None = None, allow_incomplete: bool = False
) -> TuneMerge:
    """Merge the tune shard files of `directory` into the single-run result.

    The shards' own target applies unless `slo_target` overrides it (the evaluation does not
    depend on it). Raises ShardError (see `read_shards`); with `allow_incomplete` the choice
    is among the candidates of the shards present.
    """
    shards = read_shards(directory, SHARD_KIND, _score, allow_incomplete=allow_incomplete)
    inputs = shards.inputs
    first = shards.files[0].path
    try:
        base = ModelPolicy.model_validate(inputs["policy"])
        raw_points = inputs["points"]
        if not isinstance(raw_points, list):
            raise TypeError("points: not a list")
        points = tuple(_point(p) for p in raw_points)
        if len(points) != shards.items:
            raise ValueError(f"{len(points)} points for {shards.items} items")
        stored = inputs["slo_target"]
        if not isinstance(stored, int | float) or isinstance(stored, bool):
            raise TypeError(f"slo_target {stored!r} is not a number")
        target = float(stored) if slo_target is None else slo_target
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ShardError(f"{first}: corrupt shard inputs: {exc}") from None
    listed = CandidateList(base.model, base, points, tuple(apply(base, p) for p in points))
    return TuneMerge(choose(listed, target, shards.results), shards, listed)


def _point(value: object) -> Parameters:
    # Four entries: a shard written before sized policies had their own search space.
    if not isinstance(value, list) or len(value) not in (4, 5):
        raise TypeError(f"point {value!r}: expected [factor, up, down, idle, aim]")
    factor, up, down, idle, *rest = value
    aim = rest[0] if rest else None
    return Parameters(
        float(factor),
        float(up),
        float(down),
        None if idle is None else float(idle),
        None if aim is None else float(aim),
    )


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
    slo = result.candidates[0].policy.slo if result.candidates else None
    table = Table(
        title=f"{result.model}: cost/SLO frontier of {len(result.candidates)} candidates "
        f"(target attainment {result.slo_target:.3f})",
        caption=None
        if slo is None
        else f"SLO wait: the queue wait at p{slo.percentile:g} (SLO {slo.queue_wait_seconds:g}s), "
        "nearest rank over all requests, a dropped one counting as inf",
        caption_justify="left",
    )
    for column in ("", "parameters", "GiB-h", "SLO att.", "SLO wait"):
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


def policy_file(policy: ModelPolicy, folder: Path) -> Path | None:
    """The file under `folder` (a policy file or a folder of them) that holds exactly
    `policy`, or None: the original a tuned policy is written as an edit of."""
    if not folder.exists():
        return None
    for file in policy_files(folder):
        found, _ = check_file(file)
        if found == policy:
            return file
    return None


TUNED_HEADER = "# Tuned by `scaler tune"


def write_policy(
    policy: ModelPolicy,
    path: Path,
    *,
    source: TuneResult,
    original: Path | None = None,
    base: ModelPolicy | None = None,
) -> None:
    """Write `policy` to `path`, validated by the policy loader before it replaces `path`.

    With the `original` file of the `base` policy, the file is that one with the changed
    numbers edited in place (comments, order and layout kept: a diff against it shows only
    the tuning) under a two-line header saying what was chosen; without it, or if a change
    cannot be made in place, the whole policy without its defaults. The file keeps the mode
    of the file it replaces, else of `original`, else the umask's default (never 0600).
    """
    chosen = source.chosen
    header = [
        f"{TUNED_HEADER} --model {policy.model}`: {len(source.candidates)} candidates.",
    ]
    if chosen is not None:
        header.append(
            f"# Chosen: {chosen.parameters.describe()}; {chosen.gib_hours:.2f} GiB-h, "
            f"SLO attainment {chosen.slo_attainment:.3f} (target {source.slo_target:.3f})."
        )
    body = policy_yaml(policy)
    if original is not None and base is not None:
        try:
            text = original.read_text(encoding="utf-8")
            body = edit_values(_without_tuned_header(text), changed_fields(base, policy))
        except (OSError, UnicodeDecodeError, EditError, yaml.YAMLError):
            pass  # the whole policy, as without an original
    text = "\n".join(header) + "\n" + body
    mode = _mode_of(path) or (_mode_of(original) if original is not None else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        # os.open applies the umask (NamedTemporaryFile would make it 0600).
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if mode is not None:
            os.chmod(staged, mode)
        checked, errors = check_file(staged)
        if checked is None or errors:
            raise TuneError(
                "the tuned policy failed validation: " + "; ".join(str(e) for e in errors)
            )
        os.replace(staged, path)
    except OSError as exc:
        raise TuneError(f"{path}: cannot write the tuned policy: {exc}") from None
    finally:
        staged.unlink(missing_ok=True)


def _mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _without_tuned_header(text: str) -> str:
    """`text` less the header an earlier tune wrote (re-tuning a tuned file replaces it)."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith(TUNED_HEADER):
        lines = lines[1:]
        if lines and lines[0].startswith("# Chosen: "):
            lines = lines[1:]
    return "".join(lines)
