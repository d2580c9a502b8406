"""Time one control tick of decide_all() for 4 and for 1,000 models.

Prints the median and p99 of the per-tick time over repeated ticks, with the same tick's
cost for building that tick's observations and cluster state (the baseline: what any
driver pays before deciding anything), measured in the same run. The cluster has three
96 GiB nodes per four models (750 nodes for 1,000 models), one pod per model placed.

Each size runs twice: with Python's default garbage collector settings, and with the
settings the control loop runs under (``scaler.live.loop``: `GC_THRESHOLDS`, what lives
long frozen after the first tick, a full collection every `FULL_COLLECTION_EVERY_TICKS`
ticks between two ticks). With the defaults a full collection now and then lands inside a
tick and walks every object of the process (14-33 ms with 1,000 models): that is the p99
of the ``default`` rows, and what the loop's settings keep out of its ticks.

The first line says which decision core ran: interpreted (the sources as they are) or
compiled (a build with ``SCALER_COMPILE_CORE=1``, see setup.py). To time the compiled one,
unpack such a wheel into a directory and run this script with ``PYTHONPATH`` set to it.

    python benchmarks/decide_speed.py [--ticks N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scaler.core import (
    ClusterState,
    ModelPolicy,
    ModelState,
    Node,
    Observation,
    Pod,
    Signal,
    decide_all,
)
from scaler.live.loop import FULL_COLLECTION_EVERY_TICKS, GC_THRESHOLDS
from scaler.policy import load_policies

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def fleet(models: int) -> list[ModelPolicy]:
    """`models` policies cloned from the four shipped ones, with distinct names."""
    shipped = load_policies(POLICIES)
    return [
        shipped[i % len(shipped)].model_copy(
            update={"model": f"{shipped[i % len(shipped)].model}-{i}"}
        )
        for i in range(models)
    ]


def observations(policies: Sequence[ModelPolicy], tick: int) -> dict[str, Observation]:
    """Observations with load that moves from tick to tick (so decisions do work)."""
    out = {}
    for i, policy in enumerate(policies):
        level = float((i * 7 + tick * 3) % 13)
        out[policy.model] = Observation(
            model=policy.model,
            signals={
                Signal.QUEUE_DEPTH: level,
                Signal.TOKENS_PER_SECOND: level * 4.0,
                Signal.INFLIGHT_REQUESTS: level + 1.0,
                Signal.REQUEST_RATE: level / 20.0,
            },
            sample_time=tick * 5.0,
            current_replicas=1 + i % 3,
            ready_replicas=1 + i % 2,
        )
    return out


def cluster_for(policies: Sequence[ModelPolicy]) -> ClusterState:
    """Three nodes per 4 models (a homelab each), one pod per model placed."""
    nodes = tuple(Node(f"node-{n}", 96.0) for n in range(max(3, len(policies) * 3 // 4)))
    pods = tuple(
        Pod(p.model, nodes[i % len(nodes)].name, p.placement.memory_gib)
        for i, p in enumerate(policies)
    )
    return ClusterState(nodes=nodes, pods=pods)


def measure(models: int, ticks: int, *, loop_gc: bool) -> tuple[list[float], list[float]]:
    """Per-tick seconds for decide_all and for the observation-building baseline; with
    `loop_gc`, under the control loop's collector settings (see the module docstring)."""
    policies = fleet(models)
    states: dict[str, ModelState] = {}
    decide_times: list[float] = []
    baseline_times: list[float] = []
    thresholds = gc.get_threshold()
    if loop_gc:
        gc.set_threshold(*GC_THRESHOLDS)
    try:
        for tick in range(ticks):
            start = time.perf_counter()
            obs = observations(policies, tick)
            cluster = cluster_for(policies)
            built = time.perf_counter()
            _, states = decide_all(obs, policies, states, cluster, now=tick * 5.0)
            done = time.perf_counter()
            baseline_times.append(built - start)
            decide_times.append(done - built)
            if loop_gc and tick == 0:
                gc.collect()
                gc.freeze()
            elif loop_gc and (tick + 1) % FULL_COLLECTION_EVERY_TICKS == 0:
                gc.collect()  # between two ticks, as the loop does
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.collect()
    return decide_times, baseline_times


def core_build() -> str:
    """Which decision core this process imported, mypyc-compiled or interpreted, and from where."""
    origin = sys.modules[decide_all.__module__].__file__ or ""
    kind = "compiled (mypyc)" if origin.endswith(".so") else "interpreted"
    return f"{kind}, {origin}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=60)
    args = parser.parse_args()
    print(f"decision core: {core_build()}")
    print(
        f"{'models':>7} {'gc':>8} {'decide min ms':>14} {'decide p50 ms':>14} "
        f"{'decide p99 ms':>14} {'per model us':>13} {'baseline p50 ms':>16}"
    )
    for models in (4, 1000):
        for loop_gc in (False, True):
            decide_s, base_s = measure(models, args.ticks, loop_gc=loop_gc)
            p50 = statistics.median(decide_s) * 1e3
            p99 = sorted(decide_s)[int(0.99 * (len(decide_s) - 1))] * 1e3
            print(
                f"{models:>7} {'loop' if loop_gc else 'default':>8} "
                f"{min(decide_s) * 1e3:>14.3f} {p50:>14.3f} {p99:>14.3f} "
                f"{p50 * 1e3 / models:>13.1f} {statistics.median(base_s) * 1e3:>16.3f}"
            )
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
