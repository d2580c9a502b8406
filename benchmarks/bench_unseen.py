"""Every policy on traffic shapes the decisions were never designed on: steady days and a ramp.

`scaler bench` and ``benchmarks/bench_seeds.py`` run the bundled shapes (and reseeded copies
of them), which were looked at while the decisions were chosen. This writes shapes of other
kinds, on the bundled homelab's cluster and model profiles (``simulations/homelab.yaml``,
its page-cache pre-read included), and runs every policy on them:

- ``steady-low``, ``steady-mid``, ``steady-high``: Poisson arrivals at a constant rate, at
  0.5x, 1x and 1.8x the diurnal shapes' mean rates (tinyllama 0.12/s, mistral-7b 0.04/s,
  deepseek-coder 0.03/s), three hours, Mixtral in sessions; no burst and no lull but chance;
- ``ramp-up``: three hours of a rate rising tenfold (the rising half of a six-hour cosine);

each with ``--seeds`` (default 1, 2, 3): the seed of every shape's arrivals and cold starts.
It prints the figures of ``bench_seeds.py`` (total GiB-hours over the oracle's, the worst
shape, the mean per-model SLO shortfall to the oracle, the model-shapes more than 0.005
short, the worst gap, and on how many shapes each policy reaches scaler's overall SLO for
less), then scaler's per model. ``--policies DIR`` measures another policy set.

    python benchmarks/bench_unseen.py [--seeds 1,2,3] [--workers N] [--policies DIR] [--only P]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_seeds import add_run_arguments, print_figures, run_policies
from scaler.simulation.bench import run_bench

ROOT = Path(__file__).resolve().parent.parent
HOMELAB = ROOT / "simulations" / "homelab.yaml"
DURATION = 10_800.0
# The diurnal shapes' mean rates and token sizes (simulations/bench/diurnal-a.yaml).
RATES = {
    "tinyllama": (0.12, 600.0, 120.0),
    "mistral-7b": (0.04, 1100.0, 210.0),
    "deepseek-coder": (0.03, 2000.0, 60.0),
}
MIXTRAL: dict[str, Any] = {
    "kind": "sessions",
    "model": "mixtral-8x7b",
    "durationSeconds": DURATION,
    "requestsPerSession": 8,
    "thinkSeconds": 120,
    "promptTokensMean": 900,
    "outputTokensMean": 220,
}


def _traffic(shape: str) -> list[dict[str, Any]]:
    """The traffic section of one unseen shape."""
    if shape == "ramp-up":
        items: list[dict[str, Any]] = [
            {
                "kind": "diurnal",
                "model": model,
                "durationSeconds": DURATION,
                "periodSeconds": 2 * DURATION,
                "peakAtSeconds": DURATION,
                "meanRate": rate,
                "peakToTrough": 10,
                "promptTokensMean": prompt,
                "outputTokensMean": output,
            }
            for model, (rate, prompt, output) in RATES.items()
        ]
        return [*items, {**MIXTRAL, "sessionRate": 0.0002, "requestsPerSession": 12}]
    scale = {"steady-low": 0.5, "steady-mid": 1.0, "steady-high": 1.8}[shape]
    items = [
        {
            "kind": "poisson",
            "model": model,
            "durationSeconds": DURATION,
            "rate": rate * scale,
            "promptTokensMean": prompt,
            "outputTokensMean": output,
        }
        for model, (rate, prompt, output) in RATES.items()
    ]
    return [*items, {**MIXTRAL, "sessionRate": 0.0003}]


SHAPES = ("steady-low", "steady-mid", "steady-high", "ramp-up")


def unseen_shapes(seeds: list[int], folder: Path) -> list[Path]:
    """The unseen shapes, one file per shape and seed, in `folder` (homelab's cluster and
    profiles, its policies folder made absolute)."""
    base = yaml.safe_load(HOMELAB.read_text())
    paths = []
    for seed in seeds:
        for shape in SHAPES:
            document = {
                **base,
                "name": f"{shape}-s{seed}",
                "description": f"benchmarks/bench_unseen.py: {shape}, seed {seed}",
                "seed": 9000 + seed,
                "policies": str((HOMELAB.parent / base["policies"]).resolve()),
                "traffic": _traffic(shape),
            }
            path = folder / f"{shape}-s{seed}.yaml"
            # In the file's order: each model draws its starts from the seed's child of its index.
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="seeds, comma-separated integers")
    add_run_arguments(parser)
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error("--seeds: integers, e.g. 1,2,3")
    if not seeds:
        parser.error("--seeds: at least one")
    policies = run_policies(parser, args)
    with tempfile.TemporaryDirectory(prefix="bench-unseen-") as tmp:
        paths = unseen_shapes(seeds, Path(tmp))
        result = run_bench(paths, policies, policies_path=args.policies, workers=args.workers)
    print(f"{len(result.shapes)} unseen shapes: {', '.join(SHAPES)}, seeds {seeds}")
    print_figures(result, policies)


if __name__ == "__main__":
    main()
