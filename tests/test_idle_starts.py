"""benchmarks/idle_starts.py counts the pods that served nothing, and those started beside a
running one, from a simulation's pod records and request assignments."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from benchmarks.idle_starts import Starts, count_starts
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import PodRecord, simulate
from scaler.simulation.scenario import prepare
from tests.builders import ROOT

NAN = math.nan


def test_counts_a_crafted_set_of_pods() -> None:
    """One warm pod serving, a second started beside it that is ready and serves nothing, a
    third deleted while loading, a fourth after the warm one ended that serves: the counts
    and the idle GiB-hours follow from the records alone."""
    prepared = prepare(ROOT / "simulations" / "bench" / "sparse-sessions.yaml")
    real = simulate(prepared, make_autoscaler("oracle", prepared))
    model = real.models.index("mixtral-8x7b")
    gib = real.memory_gib[model]
    pods = (
        PodRecord(model, 0.0, 0.0, 0.0, 1000.0, warm=True, id=0),
        PodRecord(model, 100.0, 100.0, 160.0, 460.0, warm=False, id=1),
        PodRecord(model, 200.0, 200.0, NAN, 230.0, warm=False, id=2),
        PodRecord(model, 2000.0, 2000.0, 2050.0, NAN, warm=False, id=3),
    )
    requests = len(real.arrival)
    assigned = np.full(requests, -1, dtype=real.pod.dtype)
    mine = np.flatnonzero(real.model == model)
    assigned[mine[0]], assigned[mine[1]] = 0, 3
    crafted = dataclasses.replace(real, pods=pods, pod=assigned)
    counts = count_starts(crafted)["mixtral-8x7b"]
    assert counts == Starts(
        started=3,
        never_ready=1,
        ready_idle=1,
        idle_gib_hours=(360.0 + 30.0) * gib / 3600.0,
        beside=2,
        beside_idle=2,
    )


def test_a_real_run_agrees_with_its_own_records() -> None:
    """On a bundled shape: every count within its whole, and the pods counted idle are
    exactly the started pods no request was served by."""
    prepared = prepare(ROOT / "simulations" / "bench" / "sparse-sessions.yaml")
    result = simulate(prepared, make_autoscaler("scaler", prepared))
    counts = count_starts(result)
    served_by = set(result.pod[result.pod >= 0].tolist())
    for m, name in enumerate(result.models):
        started = [p for p in result.pods if p.model == m and not p.warm]
        c = counts[name]
        assert c.started == len(started)
        assert c.never_ready + c.ready_idle == sum(1 for p in started if p.id not in served_by)
        assert c.beside_idle <= c.beside <= c.started
    assert counts["mixtral-8x7b"].started > 0
