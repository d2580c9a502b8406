"""How fast the simulator runs: prints wall time, simulated seconds per wall second, peak memory.

1. The Azure 2023 conversation trace (19,366 requests, bundled) spread over the homelab's
   four models (seeded random assignment), under ``scaler`` (target: under 3 s): as recorded
   (58 min; far beyond three CPU nodes, so queues grow and the drain cuts them off), and
   stretched 20x in time (19.6 h) so the homelab serves it. The stretched run is dominated
   by ``decide_all`` every 5 s of virtual time, which the no-request baseline shows.
2. A synthetic 24 h trace of 1,000,000 requests over the four models (Poisson), on a cluster
   scaled up to serve it (12 nodes, replicas.max 40), under ``scaler`` (targets: under 60 s
   and under 1 GiB peak memory).
3. A quiet week: the homelab with six requests over seven days, under ``scaler``, with idle
   ticks skipped (the default, ``scaler.simulation.engine``'s fast-forward) and with every
   tick run, in the same run: wall time and decide() calls of each, and whether the reports
   agree; then every policy of ``scaler simulate`` both ways (the baselines skip too).

Runs 1 and 2 are printed next to a baseline measured in the same run: the same scenario with
no requests at all, every tick run (ticks, scrapes and decide_all only), so the per-request
cost shows. Run: ``python benchmarks/simulate_speed.py``.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scaler.core import ModelPolicy  # noqa: E402
from scaler.simulation.comparison import POLICY_NAMES, make_autoscaler  # noqa: E402
from scaler.simulation.engine import simulate  # noqa: E402
from scaler.simulation.report import build_report  # noqa: E402
from scaler.simulation.scaler_policy import ScalerPolicy  # noqa: E402
from scaler.simulation.scenario import PreparedScenario, Scenario, prepare  # noqa: E402
from scaler.simulation.traces import (  # noqa: E402
    TokenSizes,
    Trace,
    TraceSource,
    merge,
    poisson,
    read_trace,
)

HOMELAB = ROOT / "simulations" / "homelab.yaml"
CONVERSATION = ROOT / "simulations" / "traces" / "azure_llm_2023_conv.csv"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(prepared: PreparedScenario, *, fast_forward: bool = True) -> tuple[float, float, int]:
    """(wall seconds, simulated seconds, requests) of one scaler run."""
    started = time.perf_counter()
    scaler = ScalerPolicy(prepared.policies, keep_decisions=False)
    result = simulate(prepared, scaler, fast_forward=fast_forward)
    return time.perf_counter() - started, result.duration, len(result.arrival)


def report(label: str, prepared: PreparedScenario) -> None:
    """Run the scenario with and without its requests; print both."""
    wall, simulated, requests = timed(prepared)
    empty = replace(prepared, trace=_empty_like(prepared))
    base_wall, base_simulated, _ = timed(empty, fast_forward=False)
    print(f"{label}")
    print(f"  requests: {requests:,}; simulated: {simulated / 3600:.1f} h")
    print(f"  wall: {wall:.2f} s; simulated seconds per wall second: {simulated / wall:,.0f}")
    print(
        f"  baseline, same scenario with no requests, every tick ({base_simulated / 3600:.1f} h):"
        f" {base_wall:.2f} s"
    )
    if requests:
        per_request = (wall - base_wall * simulated / base_simulated) / requests * 1e6
        print(f"  per request beyond the baseline: {per_request:.1f} µs")
    print(f"  peak RSS so far: {peak_rss_mib():,.0f} MiB")


def _empty_like(prepared: PreparedScenario) -> Trace:
    """No requests, but one at the original last arrival so the horizon stays the same."""
    trace = prepared.trace
    last = len(trace) - 1
    keep = np.zeros(len(trace), dtype=bool)
    keep[last] = True
    return Trace(
        trace.models, trace.time[keep], trace.model[keep], trace.prompt[keep], trace.output[keep]
    )


def azure_over_four_models(time_scale: float) -> PreparedScenario:
    """The conversation trace, each request assigned to one of the four models (seeded)."""
    homelab = prepare(HOMELAB)
    names = homelab.models
    loaded = read_trace(TraceSource(CONVERSATION, names[0]), names).trace
    rng = np.random.default_rng(1)
    # Shares: tinyllama and mistral carry most chat, deepseek some, mixtral a little.
    model = rng.choice(len(names), size=len(loaded), p=[0.45, 0.3, 0.2, 0.05])
    trace = Trace(names, loaded.time, model.astype(np.int64), loaded.prompt, loaded.output)
    return replace(homelab, trace=trace.time_scaled(time_scale))


def _bigger(policy: ModelPolicy) -> ModelPolicy:
    document: dict[str, Any] = policy.model_dump(by_alias=True, mode="json", exclude_none=True)
    document["replicas"]["max"] = 40
    document["placement"]["maxPerNode"] = 8
    return ModelPolicy.model_validate(document)


def synthetic_million() -> PreparedScenario:
    """24 h, 1,000,000 requests (Poisson per model), on a cluster big enough to serve them."""
    homelab = prepare(HOMELAB)
    names = homelab.models
    day = 86_400.0
    # Rates per model (req/s), summing to 1e6 / 86,400 = 11.57 req/s.
    rates = {"tinyllama": 8.0, "mistral-7b": 2.0, "deepseek-coder": 1.2, "mixtral-8x7b": 0.3742}
    sizes = {
        "tinyllama": TokenSizes(200, 50),
        "mistral-7b": TokenSizes(300, 100),
        "deepseek-coder": TokenSizes(400, 40),
        "mixtral-8x7b": TokenSizes(200, 100),
    }
    parts = [
        poisson(name, rate=rates[name], duration=day, sizes=sizes[name], seed=i)
        for i, name in enumerate(names)
    ]
    trace = merge(parts).relabel(names)
    document = homelab.scenario.model_dump(by_alias=True, mode="json")
    document["nodes"] = [{"name": f"node-{i}", "allocatableGiB": 90.0} for i in range(12)]
    document["traffic"] = []
    scenario = Scenario.model_validate(document)
    policies = tuple(_bigger(p) for p in homelab.policies)
    return PreparedScenario(homelab.path, scenario, policies, trace, ())


def quiet_week() -> PreparedScenario:
    """The homelab with six requests in seven days (one per model, two more), no other."""
    homelab = prepare(HOMELAB)
    day = 86_400.0
    times = np.array([600.0, 0.5 * day, 2 * day, 3.5 * day, 5 * day, 7 * day - 3_600])
    models = np.array([0, 1, 2, 3, 0, 3], dtype=np.int64)
    sizes = np.full(len(times), 400, dtype=np.int64)
    return replace(homelab, trace=Trace(homelab.models, times, models, sizes, sizes))


def report_week(prepared: PreparedScenario) -> None:
    """The quiet week with and without the fast-forward: wall time, decide() calls, and
    whether the two reports agree (they must)."""
    print("A quiet week: the homelab, six requests in 7 days, scaler")
    reports = []
    for fast_forward in (True, False):
        scaler = ScalerPolicy(prepared.policies)
        started = time.perf_counter()
        result = simulate(prepared, scaler, fast_forward=fast_forward)
        wall = time.perf_counter() - started
        document = build_report(result).to_json()
        document.pop("wall_s")
        reports.append(document)
        label = "idle ticks skipped" if fast_forward else "every tick run    "
        print(
            f"  {label}: wall {wall:6.2f} s, {len(scaler.decisions):7,} decide() calls over"
            f" {len(result.tick_times):,} ticks, {result.duration / wall:,.0f} simulated s per s"
        )
    print(f"  reports identical: {reports[0] == reports[1]}")
    # `scaler simulate` runs every policy: the baselines skip their idle ticks too.
    walls = []
    for fast_forward in (True, False):
        started = time.perf_counter()
        for name in POLICY_NAMES:
            simulate(prepared, make_autoscaler(name, prepared), fast_forward=fast_forward)
        walls.append(time.perf_counter() - started)
    print(
        f"  every policy ({', '.join(POLICY_NAMES)}): {walls[0]:.2f} s with idle ticks skipped,"
        f" {walls[1]:.2f} s with every tick run"
    )
    print(f"  peak RSS so far: {peak_rss_mib():,.0f} MiB")


def main() -> None:
    """Print the figures."""
    print(f"peak RSS after imports: {peak_rss_mib():,.0f} MiB")
    report(
        "Azure 2023 conversation trace over the four models, as recorded, scaler",
        azure_over_four_models(1.0),
    )
    report(
        "Azure 2023 conversation trace over the four models, time x20, scaler",
        azure_over_four_models(20.0),
    )
    started = time.perf_counter()
    million = synthetic_million()
    print(f"(generating the 1M-request trace took {time.perf_counter() - started:.2f} s)")
    assert len(million.trace) > 990_000, len(million.trace)
    report("Synthetic 24 h, ~1,000,000 requests, four models, 12 nodes, scaler", million)
    report_week(quiet_week())


if __name__ == "__main__":
    main()
