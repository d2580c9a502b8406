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

    python benchmarks/bench_seeds.py [--seeds 1,2] [--workers N]
"""

from __future__ import annotations

import argparse
import re
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="extra seeds, comma-separated digits")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    extras = [int(s) for s in args.seeds.split(",") if s.strip()]
    if any(not re.fullmatch(r"\d", str(e)) for e in extras):
        parser.error("--seeds: single digits, e.g. 1,2")
    originals = suite_files(
        ROOT / "simulations" / "bench", [], ROOT / "simulations" / "homelab.yaml"
    )
    policies = policy_names(POLICIES)
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
        copies = [reseeded(f, e, Path(tmp)) for e in extras for f in originals]
        result = run_bench([*originals, *copies], policies, workers=args.workers)
    print(f"{len(result.shapes)} shapes: the {len(originals)} bundled, reseeded {extras}")
    print("\n".join(summary(result, policies)))


if __name__ == "__main__":
    main()
