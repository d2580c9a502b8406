"""`scaler bench` on reseeded copies of its shapes: do the decisions hold off the tuned seeds?

The bench shapes were looked at while the decisions were designed; copies of them with other
seeds (other arrivals for the synthetic shapes, other thinning of the traces, other cold-start
draws) were not. For every shape of ``simulations/bench/`` and ``simulations/homelab.yaml``
this writes one copy per extra seed (seed ``S`` becomes ``S`` followed by the digits of the
extra seed twice, e.g. 404 -> 40411 for seed 1), with every path made absolute, runs every
policy on the originals and the copies, and prints per policy: total GiB-hours over the
oracle's, the worst shape's ratio, the mean per-model SLO shortfall to the oracle (gaps above
zero count as zero), how many model-shapes fall more than 0.005 below the oracle, the worst
gap, and on how many shapes the policy reaches scaler's overall attainment for less.

``--policies DIR`` replaces the shapes' policy folder (the bundled ``policies/``) with
another, as ``scaler bench --policies`` does: a candidate policy set measured on the same 21
shapes. ``--only scaler`` runs scaler alone (and the oracle its figures are relative to),
in a third of the time, for comparing candidates.

    python benchmarks/bench_seeds.py [--seeds 1,2] [--workers N] [--policies DIR] [--only scaler]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from scaler.simulation.bench import BenchResult, run_bench, suite_files
from scaler.simulation.comparison import policy_names

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("scaler", "hpa", "hpa-warm", "keda", "keda-http", "kpa")


def reseeded(source: Path, extra: int, folder: Path) -> Path:
    """A copy of scenario `source` in `folder` with its seed extended by `extra` (see the
    module docstring) and its relative paths (policies, trace files) made absolute."""
    document = yaml.safe_load(source.read_text())
    document["seed"] = int(f"{document.get('seed', 0)}{extra}{extra}")
    document["name"] = f"{document.get('name', source.stem)}-s{extra}"
    if isinstance(document.get("policies"), str):
        document["policies"] = str((source.parent / document["policies"]).resolve())
    for traffic in document.get("traffic", []):
        if isinstance(traffic, dict) and isinstance(traffic.get("file"), str):
            traffic["file"] = str((source.parent / traffic["file"]).resolve())
    target = folder / f"{source.stem}-s{extra}.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def extra_seeds(text: str) -> list[int]:
    """``--seeds``: single digits, comma-separated; ValueError naming the rule otherwise."""
    extras = [s.strip() for s in text.split(",") if s.strip()]
    if any(not re.fullmatch(r"\d", e) for e in extras):
        raise ValueError("--seeds: single digits, e.g. 1,2")
    return [int(e) for e in extras]


def seeded_shapes(extras: Sequence[int], folder: Path) -> tuple[list[Path], list[Path]]:
    """The bundled shapes, and their copies reseeded with each of `extras` (in `folder`)."""
    originals = suite_files(
        ROOT / "simulations" / "bench", [], ROOT / "simulations" / "homelab.yaml"
    )
    return originals, [reseeded(f, e, folder) for e in extras for f in originals]


def summary(result: BenchResult, policies: list[str]) -> list[str]:
    """One line per policy (and the oracle): the figures of the module docstring."""
    lines = [
        f"{'policy':<10} {'total/oracle':>12} {'worst shape':>11} {'mean gap':>9} "
        f"{'< -0.005':>9} {'worst gap':>9} {'cheaper at scaler SLO':>22}"
    ]
    oracles = [s.score("oracle") for s in result.shapes]
    oracle_total = sum(o.gib_hours for o in oracles if o is not None)
    for policy in [*policies, "oracle"]:
        scores = [s.score(policy) for s in result.shapes]
        mine = [s for s in scores if s is not None]
        gaps = [min(0.0, m.slo_gap) for s in mine for m in s.models.values()]
        cheaper = 0
        for shape in result.shapes:
            own, ours = shape.score(policy), shape.score("scaler")
            if policy != "scaler" and own is not None and ours is not None:
                cheaper += own.slo_attainment >= ours.slo_attainment and (
                    own.gib_hours < ours.gib_hours
                )
        lines.append(
            f"{policy:<10} {sum(s.gib_hours for s in mine) / oracle_total:>11.3f}x "
            f"{max(s.cost_ratio for s in mine):>10.3f}x {sum(gaps) / len(gaps):>+9.4f} "
            f"{sum(g < -0.005 for g in gaps):>4}/{len(gaps):<4} {min(gaps):>+9.3f} "
            f"{cheaper:>17}/{len(result.shapes)}"
        )
    return lines


def per_model(result: BenchResult, policy: str) -> list[str]:
    """`policy`'s figures per model over every shape: mean and worst SLO gap, GiB-hours
    above the oracle's, cold starts (where the gap and the cost of the table come from)."""
    head = f"{'mean gap':>9} {'worst gap':>9} {'excess GiB-h':>12} {'cold':>5}"
    lines = [f"{policy + ' per model':<19} {head}"]
    models: dict[str, list[tuple[float, float, int]]] = {}
    for shape in result.shapes:
        own, oracle = shape.score(policy), shape.score("oracle")
        if own is None or oracle is None:
            continue
        for name, score in own.models.items():
            excess = score.gib_hours - oracle.models[name].gib_hours
            models.setdefault(name, []).append((min(0.0, score.slo_gap), excess, score.cold_starts))
    for name, rows in models.items():
        gaps = [g for g, _, _ in rows]
        lines.append(
            f"  {name:<17} {sum(gaps) / len(gaps):>+9.4f} {min(gaps):>+9.3f} "
            f"{sum(e for _, e, _ in rows):>12.1f} {sum(c for _, _, c in rows):>5}"
        )
    return lines


def print_figures(result: BenchResult, policies: list[str]) -> None:
    """`summary`, then scaler's `per_model` when scaler ran."""
    print("\n".join(summary(result, policies)))
    if "scaler" in policies:
        print("\n".join(per_model(result, "scaler")))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--policies`` and ``--only``, as every suite script here takes them."""
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--policies", type=Path, default=None, help="policy folder or file")
    parser.add_argument("--only", default=None, help="policies to run, comma list (default: all)")


def run_policies(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The policies ``--only`` names (all of them by default), the oracle left out: it runs
    and prints anyway; exits through `parser` on an unknown name or a missing ``--policies``."""
    try:
        chosen = policy_names([args.only] if args.only else POLICIES)
    except ValueError as exc:
        parser.error(f"--only: {exc}")
    if args.policies is not None and not args.policies.exists():
        parser.error(f"--policies: {args.policies} does not exist")
    return [p for p in chosen if p != "oracle"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="extra seeds, comma-separated digits")
    add_run_arguments(parser)
    args = parser.parse_args()
    try:
        extras = extra_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    policies = run_policies(parser, args)
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
        originals, copies = seeded_shapes(extras, Path(tmp))
        result = run_bench(
            [*originals, *copies], policies, policies_path=args.policies, workers=args.workers
        )
    print(f"{len(result.shapes)} shapes: the {len(originals)} bundled, reseeded {extras}")
    print_figures(result, policies)


if __name__ == "__main__":
    main()
