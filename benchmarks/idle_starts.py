"""Replicas started for nothing: the pods each policy starts that never serve a request.

A replica asked for ahead of a burst that does not come is insurance; one that never serves
a request cost its memory for nothing. For every shape of ``benchmarks/bench_seeds.py`` (the
bundled shapes and their reseeded copies) this runs each policy and prints per model, summed
over the shapes: the pods started (not those running at the start), how many served no
request (deleted while loading, or ready but idle until deleted or the end), their GiB-hours,
and the pods started while another of the same model was running, and how many of those
served nothing. For an on-demand model that last pair is the goal's "one cold start per
session unless concurrent demand needs a second replica": a second replica that serves
nothing was not needed.

    python benchmarks/idle_starts.py [--seeds 1,2] [--workers N] [--only scaler,oracle]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_seeds import extra_seeds, seeded_shapes
from scaler.simulation.comparison import make_autoscaler, policy_names
from scaler.simulation.engine import SimulationResult, simulate
from scaler.simulation.scenario import prepare

POLICIES = ("scaler", "hpa", "hpa-warm", "keda", "keda-http", "kpa", "oracle")


@dataclass(frozen=True)
class Starts:
    """One model's started pods under one policy (on one shape, or summed)."""

    started: int = 0
    never_ready: int = 0  # served nothing: deleted before it was ready
    ready_idle: int = 0  # served nothing: ready, then idle until deleted or the end
    idle_gib_hours: float = 0.0  # what the pods that served nothing cost
    beside: int = 0  # started while another pod of the model was running
    beside_idle: int = 0  # of those, served nothing

    def __add__(self, other: Starts) -> Starts:
        return Starts(
            self.started + other.started,
            self.never_ready + other.never_ready,
            self.ready_idle + other.ready_idle,
            self.idle_gib_hours + other.idle_gib_hours,
            self.beside + other.beside,
            self.beside_idle + other.beside_idle,
        )


def count_starts(result: SimulationResult) -> dict[str, Starts]:
    """Per model of `result`: its started pods and those that served no request."""
    served = np.bincount(result.pod[result.pod >= 0], minlength=len(result.pods))
    found: dict[str, Starts] = {}
    for m, name in enumerate(result.models):
        pods = [p for p in result.pods if p.model == m]
        counts = Starts()
        for pod in pods:
            if pod.warm:
                continue
            end = pod.ended if math.isfinite(pod.ended) else result.duration
            idle = served[pod.id] == 0
            # Running beside it: another pod of the model created before it and not yet
            # ended (warm pods count: they run).
            beside = any(
                q is not pod
                and q.created <= pod.created
                and not (math.isfinite(q.ended) and q.ended <= pod.created)
                for q in pods
            )
            ready = math.isfinite(pod.ready) and pod.ready <= end
            counts = counts + Starts(
                started=1,
                never_ready=int(idle and not ready),
                ready_idle=int(idle and ready),
                idle_gib_hours=(end - pod.created) * result.memory_gib[m] / 3600.0 if idle else 0.0,
                beside=int(beside),
                beside_idle=int(beside and idle),
            )
        found[name] = counts
    return found


def run_one(path: str, policy: str) -> dict[str, Starts]:
    """Simulate `policy` on the scenario at `path` and count its starts."""
    prepared = prepare(Path(path))
    return count_starts(simulate(prepared, make_autoscaler(policy, prepared)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="extra seeds, comma-separated digits")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--only", default=None, help="policies to run, comma list (default: all)")
    args = parser.parse_args()
    try:
        extras = extra_seeds(args.seeds)
        policies = policy_names([args.only]) if args.only else list(POLICIES)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="idle-starts-") as tmp:
        originals, copies = seeded_shapes(extras, Path(tmp))
        jobs = [(str(f), p) for f in (*originals, *copies) for p in policies]
        totals: dict[tuple[str, str], Starts] = {}
        with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
            futures = {pool.submit(run_one, *job): job for job in jobs}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                policy = futures[future][1]
                for model, starts in future.result().items():
                    totals[(policy, model)] = totals.get((policy, model), Starts()) + starts
                print(f"\r{done}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    shapes = len(originals) + len(copies)
    print(f"{shapes} shapes; per model and policy, summed: pods started, of them serving nothing")
    print("(never ready + ready but idle, their GiB-hours), and started beside a running pod")
    print(
        f"{'model':<16} {'policy':<10} {'started':>8} {'for nothing':>16} {'GiB-h':>7} "
        f"{'beside':>17}"
    )
    for model in sorted({m for _, m in totals}):
        for policy in policies:
            s = totals.get((policy, model), Starts())
            nothing = f"{s.never_ready + s.ready_idle} ({s.never_ready}+{s.ready_idle})"
            beside = f"{s.beside} ({s.beside_idle} idle)"
            print(
                f"{model:<16} {policy:<10} {s.started:>8} {nothing:>16} "
                f"{s.idle_gib_hours:>7.1f} {beside:>17}"
            )


if __name__ == "__main__":
    main()
