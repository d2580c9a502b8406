"""The data path the policies are sized for is the one the manifests and scenarios set up.

A policy's ``sizing.detectionSeconds`` is the time from a sample to a decision acting on it
(the scrape interval plus a tick): the reaction time its replicas must bridge. It is only
right if Prometheus scrapes the models and the activator (the llama.cpp models' request
counters) that often, and the simulated scenarios scrape as the ServiceMonitors do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaler.live.serve import ServeOptions
from scaler.simulation.scenario import check_scenario
from tests.builders import ROOT
from tests.deploy.objects import MANIFESTS, named, policies

SCENARIOS = [
    ROOT / "simulations" / "homelab.yaml",
    *sorted((ROOT / "simulations" / "bench").glob("*.yaml")),
    MANIFESTS / "jobs" / "scenario" / "homelab-week.yaml",
]


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def _scrape_intervals() -> dict[str, float]:
    """The scrape interval of the models and of the activator, each way they are shipped."""
    found = {}
    for name, namespace in (("models", "cortex"), ("scaler-activator", "cortex")):
        (endpoint,) = named("ServiceMonitor", name, namespace)["spec"]["endpoints"]
        found[f"ServiceMonitor {name}"] = _seconds(endpoint["interval"])
    configs = yaml.safe_load((MANIFESTS / "monitoring" / "scrape-configs.yaml").read_text())
    for job in configs["scrape_configs"]:
        if job["job_name"] in ("cortex-models", "scaler-activator"):
            found[f"scrape_configs {job['job_name']}"] = _seconds(job["scrape_interval"])
    return found


def test_the_models_and_the_activator_are_scraped_at_one_interval() -> None:
    intervals = _scrape_intervals()
    assert len(intervals) == 4
    assert len(set(intervals.values())) == 1, intervals


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_the_scenarios_scrape_as_the_manifests_do(path: Path) -> None:
    scenario, errors = check_scenario(path)
    assert scenario is not None, errors
    (interval,) = set(_scrape_intervals().values())
    assert scenario.metrics.scrape_interval_seconds == interval


@pytest.mark.parametrize("model", sorted(policies()))
def test_detection_covers_a_scrape_and_a_tick(model: str) -> None:
    sizing = policies()[model].sizing
    assert sizing is not None
    (interval,) = set(_scrape_intervals().values())
    assert sizing.detection_seconds >= interval + ServeOptions().interval
