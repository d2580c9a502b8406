"""SLO misses no autoscaler that cannot see the future avoids: on-demand first requests.

An on-demand model (``replicas.min: 0``) starts every run at zero. Its first request finds
no replica, whatever the autoscaler, unless one was kept warm before any request had ever
come (``hpa-warm`` does, for twice the oracle's cost); it waits for the wake-up and the cold
start. Where that start reads the weights from the volume (Mixtral: ``uncachedColdStart``,
a median of 107 s against a 90 s SLO), the request misses; where a pre-read filled that
node's page cache first (``cachedNodes``: the shipped manifests do it on Mixtral's preferred
nodes), the start is a page-cache one and the request is served. The oracle, which pre-warms a
worst-case cold start ahead of every arrival, does not. On a model with 10-50 requests a
shape, that one request is 0.02-0.10 of its attainment: on its own more than the 0.005 the
per-model goal allows.

For every shape of ``benchmarks/bench_seeds.py`` (the bundled shapes and their reseeded
copies) this runs scaler and the two baselines that also scale to zero and hold requests
there (Knative's KPA, KEDA's HTTP add-on), and prints per on-demand model and shape the
requests, each policy's misses and whether the first request was one of them. Last, a
summary: of the model-shapes where scaler is more than 0.005 short of the oracle (the
oracle misses none of these), on how many the first request is scaler's only miss, and
whether every other policy missed it too.

    python benchmarks/first_requests.py [--seeds 1,2] [--workers N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_seeds import extra_seeds, seeded_shapes
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import simulate
from scaler.simulation.scenario import prepare

POLICIES = ("scaler", "kpa", "keda-http")


@dataclass(frozen=True)
class Misses:
    """One on-demand model's SLO misses under one policy on one shape."""

    requests: int
    misses: int
    first_missed: bool


def on_demand_misses(path: str, policy: str) -> dict[str, Misses]:
    """Run `policy` on the scenario at `path`; its misses per on-demand model."""
    prepared = prepare(Path(path))
    result = simulate(prepared, make_autoscaler(policy, prepared))
    found: dict[str, Misses] = {}
    for m, name in enumerate(result.models):
        model_policy = result.policies[m]
        mine = np.flatnonzero(result.model == m)
        if model_policy.replicas.min != 0 or len(mine) == 0:
            continue
        wait = result.start[mine] - result.arrival[mine]
        # A request never started (NaN) waited longer than any threshold.
        late = ~(wait <= model_policy.slo.queue_wait_seconds)
        found[name] = Misses(len(mine), int(late.sum()), bool(late[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="extra seeds, comma-separated digits")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    try:
        extras = extra_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="first-requests-") as tmp:
        originals, copies = seeded_shapes(extras, Path(tmp))
        files = [*originals, *copies]
        jobs = [(str(f), p) for f in files for p in (*POLICIES, "oracle")]
        results: dict[tuple[str, str], dict[str, Misses]] = {}
        with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
            futures = {pool.submit(on_demand_misses, *job): job for job in jobs}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                results[futures[future]] = future.result()
                print(f"\r{done}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    print(f"{'shape':<22} {'model':<14} {'requests':>8}  misses (first request missed?)")
    print(f"{'':<22} {'':<14} {'':>8}  " + "  ".join(f"{p:>14}" for p in (*POLICIES, "oracle")))
    short = first_only = shared = 0
    for f in files:
        shape = f.stem
        for model, own in results[(str(f), "scaler")].items():
            row = [results[(str(f), p)][model] for p in (*POLICIES, "oracle")]
            cells = "  ".join(f"{r.misses:>7} ({'yes' if r.first_missed else ' no'})" for r in row)
            print(f"{shape:<22} {model:<14} {own.requests:>8}  {cells}")
            oracle = row[-1]
            gap = (oracle.misses - own.misses) / own.requests
            if gap < -0.005 and oracle.misses == 0:
                short += 1
                if own.misses == 1 and own.first_missed:
                    first_only += 1
                    shared += all(r.first_missed for r in row[1:-1])
    print(
        f"\non-demand model-shapes more than 0.005 short of the oracle (which missed none): "
        f"{short}; the first request scaler's only miss: {first_only}; missed by "
        f"{' and '.join(POLICIES[1:])} too: {shared}"
    )


if __name__ == "__main__":
    main()
