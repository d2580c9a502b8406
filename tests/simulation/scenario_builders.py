"""Small scenarios for simulator tests: built in memory, no files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scaler.core import ModelPolicy
from scaler.simulation.scenario import PreparedScenario, Scenario
from scaler.simulation.traces import (
    TokenSizes,
    Trace,
    empty_trace,
    merge,
    poisson,
    write_canonical,
)
from tests.builders import ROOT, make_policy

PROFILES: dict[str, dict[str, Any]] = {
    "tinyllama": {
        "slots": 4,
        "prefillTokensPerSecond": 200,
        "decodeTokensPerSecond": 60,
        "decodeSlowdownPerStream": 0.5,
        "coldStart": {"medianSeconds": 8},
    },
    "mistral-7b": {
        "slots": 4,
        "prefillTokensPerSecond": 50,
        "decodeTokensPerSecond": 11,
        "decodeSlowdownPerStream": 0.5,
        "coldStart": {"medianSeconds": 60},
    },
    "mixtral-8x7b": {
        "slots": 2,
        "prefillTokensPerSecond": 18,
        "decodeTokensPerSecond": 6.5,
        "decodeSlowdownPerStream": 0.5,
        "coldStart": {"medianSeconds": 40},
    },
}


def make_scenario(
    traffic: Trace | list[Trace],
    *,
    policies: list[ModelPolicy] | None = None,
    nodes: int = 3,
    node_gib: float = 90.0,
    drain_seconds: float = 600.0,
    profiles: dict[str, dict[str, Any]] | None = None,
    **changes: Any,
) -> PreparedScenario:
    """A prepared scenario for the models of `policies` (default: tinyllama) and `traffic`."""
    policies = policies or [make_policy("tinyllama")]
    names = [p.model for p in policies]
    given = profiles or {}
    document: dict[str, Any] = {
        "kind": "Scenario",
        "name": "test",
        "nodes": [{"name": f"n{i}", "allocatableGiB": node_gib} for i in range(nodes)],
        "models": {n: given.get(n, PROFILES[n]) for n in names},
        "drainSeconds": drain_seconds,
        **changes,
    }
    scenario = Scenario.model_validate(document)
    parts = traffic if isinstance(traffic, list) else [traffic]
    trace = merge(parts).relabel(names) if parts else empty_trace(names)
    return PreparedScenario(Path("test.yaml"), scenario, tuple(policies), trace, ())


def write_tiny_scenario(folder: Path) -> Path:
    """A 20-minute two-model scenario file (tinyllama, Mixtral) with its trace next to it,
    for command-line tests: a candidate or a run takes about 0.1 s."""
    trace = merge(
        [
            poisson("tinyllama", rate=0.2, duration=1200, sizes=TokenSizes(300, 60), seed=1),
            poisson("mixtral-8x7b", rate=0.005, duration=1200, sizes=TokenSizes(200, 60), seed=2),
        ]
    )
    write_canonical(trace, folder / "trace.csv")
    scenario = {
        "kind": "Scenario",
        "name": "tiny",
        "policies": str(ROOT / "policies"),
        "nodes": [{"name": "n1", "allocatableGiB": 90}, {"name": "n2", "allocatableGiB": 90}],
        "models": {
            "tinyllama": {
                "slots": 4,
                "prefillTokensPerSecond": 200,
                "decodeTokensPerSecond": 60,
                "coldStart": {"medianSeconds": 8},
            },
            "mixtral-8x7b": {
                "slots": 2,
                "prefillTokensPerSecond": 18,
                "decodeTokensPerSecond": 6.5,
                "coldStart": {"medianSeconds": 40},
            },
        },
        "traffic": [{"kind": "trace", "file": "trace.csv"}],
        "drainSeconds": 300,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(scenario))
    return path
