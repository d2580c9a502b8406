"""Does the sizing's count tail say what happens one reaction time later?

The SLO sizing (`scaler.core.sizing.size_for_slo`) predicts, at every tick, the probability
that the requests in the system one reaction time R ahead (detection + cold start) overrun
what the running replicas hold. This replays scenarios under ``scaler`` and checks that
prediction against the count that came: the requests that had arrived by ``t + R`` and whose
own service (as served) had not ended by then, the infinite-server count the model stands
for, so it does not depend on how many replicas were there.

For one model it prints, for the capacities of one and two replicas, the predicted
``P(count > capacity)`` binned, against how often the count did exceed it; then per scenario,
under ``scaler`` and the ``oracle``: the mean replica count asked for, how often the count
at ``t + R`` exceeded the capacity of the replicas asked for at ``t`` (every 15 s), and the
fraction of the model's requests that waited longer than the SLO.

    python benchmarks/tail_calibration.py [--model deepseek-coder] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from scaler.core import Signal
from scaler.core.sizing import _CAPACITY_TOLERANCE, count_above
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import SimulationResult, simulate
from scaler.simulation.scenario import prepare

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIOS = (
    ROOT / "simulations" / "homelab.yaml",
    ROOT / "simulations" / "bench" / "azure-code.yaml",
    ROOT / "simulations" / "bench" / "diurnal-a.yaml",
)
BINS = (0.0, 0.001, 0.005, 0.01, 0.03, 0.1, 0.3, 1.01)


class _Model:
    """One model's figures in one run: its requests, reaction time and replica capacity."""

    def __init__(self, result: SimulationResult, model: str) -> None:
        index = result.models.index(model)
        policy = result.policies[index]
        if policy.sizing is None:
            raise SystemExit(f"{model}: its policy has no sizing section")
        self.index = index
        self.reaction = policy.sizing.detection_seconds + policy.cold_start.seconds
        self.wait = policy.slo.queue_wait_seconds
        self.slots = policy.sizing.slots_per_replica
        chosen = result.model == index
        self.arrival = result.arrival[chosen]
        self.done = self.arrival + (result.end - result.start)[chosen]
        self.waits = (result.start - result.arrival)[chosen]

    def count_at(self, when: float) -> int:
        """Requests arrived by `when` whose own service had not ended by then."""
        return int(np.sum((self.arrival <= when) & (self.done > when)))

    def capacity(self, replicas: int, service_s: float) -> int:
        """The whole requests `replicas` hold within the SLO's wait (as the sizing counts)."""
        return math.floor(
            replicas * self.slots * (1.0 + self.wait / service_s) + _CAPACITY_TOLERANCE
        )


def calibration(paths: list[Path], model: str) -> None:
    """Predicted against realized tail, over every sized tick of every scenario."""
    predicted: dict[int, list[float]] = {1: [], 2: []}
    realized: dict[int, list[bool]] = {1: [], 2: []}
    for path in paths:
        prepared = prepare(path)
        result = simulate(prepared, make_autoscaler("scaler", prepared), fast_forward=False)
        figures = _Model(result, model)
        for decision in result.decisions:
            sizing = decision.sizing
            inflight = decision.signals.get(Signal.INFLIGHT_REQUESTS)
            if decision.model != model or sizing is None or inflight is None:
                continue
            if not math.isfinite(inflight):
                continue
            survive = math.exp(-figures.reaction / sizing.service_seconds)
            later = figures.count_at(decision.time + figures.reaction)
            for replicas in (1, 2):
                cap = figures.capacity(replicas, sizing.service_seconds)
                predicted[replicas].append(
                    count_above(
                        cap, inflight, survive, sizing.load * (1.0 - survive), sizing.dispersion
                    )
                )
                realized[replicas].append(later > cap)
    for replicas in (1, 2):
        pred = np.asarray(predicted[replicas])
        real = np.asarray(realized[replicas])
        print(
            f"{model}, {replicas} replica(s): {len(pred)} ticks, mean predicted "
            f"{pred.mean():.4f}, realized {real.mean():.4f}"
        )
        for low, high in itertools.pairwise(BINS):
            chosen = (pred >= low) & (pred < high)
            if chosen.any():
                print(
                    f"  predicted [{low:.3f}, {high:.3f}): {int(chosen.sum()):5d} ticks, "
                    f"mean {pred[chosen].mean():.4f}, realized {real[chosen].mean():.4f}"
                )


def exceedance(paths: list[Path], model: str) -> None:
    """Per scenario and policy: replicas asked for, overruns one reaction time later, misses."""
    for path in paths:
        prepared = prepare(path)
        for name in ("scaler", "oracle"):
            result = simulate(prepared, make_autoscaler(name, prepared), fast_forward=False)
            figures = _Model(result, model)
            service = result.policies[figures.index].sizing
            assert service is not None  # _Model refused a policy without sizing
            ticks = np.arange(0.0, result.duration - figures.reaction, 15.0)
            spec: npt.NDArray[np.int64] = np.full(
                len(ticks), result.initial_replicas[figures.index]
            )
            for when, index, replicas in result.spec_changes:
                if index == figures.index:
                    spec[ticks >= when] = replicas
            over = [
                figures.count_at(t + figures.reaction)
                > figures.capacity(int(n), service.service_seconds)
                for t, n in zip(ticks, spec, strict=True)
            ]
            missed = float(np.mean(~(figures.waits <= figures.wait)))
            print(
                f"{path.stem:16s} {name:7s} mean replicas {spec.mean():.2f}  overrun "
                f"{np.mean(over):.4f} of {len(ticks)} ticks  missed {missed:.4f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="deepseek-coder")
    parser.add_argument("scenarios", nargs="*", type=Path, default=list(DEFAULT_SCENARIOS))
    args = parser.parse_args()
    calibration(args.scenarios, args.model)
    exceedance(args.scenarios, args.model)


if __name__ == "__main__":
    main()
