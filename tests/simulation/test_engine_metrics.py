"""The model-server, cAdvisor and kube-state-metrics series of the OpenMetrics export,
checked against the simulated run they come from.

Budget: well under a second (two short runs, no Prometheus; the round trip through a real
one is test_roundtrip.py).
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pytest

from scaler.simulation import engine_metrics, openmetrics
from scaler.simulation.engine import SERVED, SimulationResult, simulate
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.traces import TokenSizes, merge, poisson
from tests.builders import make_policy
from tests.simulation.scenario_builders import make_scenario

_LINE = re.compile(r"^([\w:]+)\{([^}]*)\} (\S+) (\S+)$")
Series = dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[float, float]]]


def _series(result: SimulationResult) -> Series:
    out: Series = defaultdict(list)
    for line in engine_metrics.render_lines(result, openmetrics.EPOCH):
        if line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, line
        name, labels, value, stamp = match.groups()
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.split(","))
        key = frozenset((k, v.strip('"')) for k, v in pairs)
        out[name, key].append((float(stamp) - openmetrics.EPOCH, float(value)))
    return out


@pytest.fixture(scope="module")
def runs() -> tuple[SimulationResult, SimulationResult]:
    llamacpp = make_scenario(
        merge(
            [
                poisson("tinyllama", rate=0.3, duration=900, sizes=TokenSizes(300, 80), seed=1),
                poisson(
                    "mixtral-8x7b", rate=0.01, duration=600, sizes=TokenSizes(300, 80), seed=2
                ).shifted(200),
            ]
        ),
        policies=[make_policy("tinyllama"), make_policy("mixtral-8x7b")],
        drain_seconds=300,
    )
    vllm = make_scenario(
        poisson("mistral-7b", rate=0.08, duration=900, sizes=TokenSizes(300, 60), seed=3),
        policies=[make_policy("mistral-7b")],
        drain_seconds=300,
    )
    return (
        simulate(llamacpp, ScalerPolicy(llamacpp.policies)),
        simulate(vllm, ScalerPolicy(vllm.policies)),
    )


def _last_sum(series: Series, name: str, model: str) -> float:
    return sum(
        points[-1][1]
        for (n, labels), points in series.items()
        if n == name and ("model", model) in labels
    )


def _completed(result: SimulationResult, model: str) -> np.ndarray:
    """Served requests of `model` whose pod was scraped after they completed."""
    m = result.models.index(model)
    last_scrape = {
        p.id: float(
            result.scrape_times[
                result.scrape_times < (p.ended if np.isfinite(p.ended) else np.inf)
            ][-1]
        )
        for p in result.pods
        if p.model == m
    }
    chosen = (result.model == m) & (result.status == SERVED)
    ok = np.array(
        [result.end[i] <= last_scrape[int(result.pod[i])] for i in np.flatnonzero(chosen)]
    )
    return np.flatnonzero(chosen)[ok] if len(ok) else np.zeros(0, dtype=np.int64)


def test_llamacpp_counters_sum_the_requests_each_pod_served(
    runs: tuple[SimulationResult, SimulationResult],
) -> None:
    """Summed over pods, the last generated-token and prompt counters are the tokens of the
    requests completed before each pod's last scrape."""
    result, _ = runs
    series = _series(result)
    for model in ("tinyllama", "mixtral-8x7b"):
        done = _completed(result, model)
        assert len(done) > 0
        assert (
            _last_sum(series, "llamacpp:tokens_predicted_total", model) == result.output[done].sum()
        )
        assert _last_sum(series, "llamacpp:prompt_tokens_total", model) >= result.prompt[done].sum()


def test_counters_never_go_down_and_pods_carry_the_policy_labels(
    runs: tuple[SimulationResult, SimulationResult],
) -> None:
    """Every counter series is monotone; every engine series has the policy's matchers'
    labels (namespace, model) and its pod."""
    for result in runs:
        for (name, labels), points in _series(result).items():
            keys = dict(labels)
            if name.startswith(("llamacpp:", "vllm:")):
                assert keys["namespace"] == "cortex", name
                assert keys["pod"].startswith(keys["model"] + "-sim-"), keys
            if name.endswith(("_total", "_count", "_sum", "_bucket")):
                values = [v for _, v in points]
                assert values == sorted(values), name


def test_vllm_request_counters_match_the_served_requests(
    runs: tuple[SimulationResult, SimulationResult],
) -> None:
    """vLLM: successes and the first-token count equal the requests completed (and started)
    before their pod's last scrape; live generation tokens are at least the finished ones'."""
    _, result = runs
    series = _series(result)
    done = _completed(result, "mistral-7b")
    assert _last_sum(series, "vllm:request_success_total", "mistral-7b") == len(done)
    assert _last_sum(series, "vllm:time_to_first_token_seconds_count", "mistral-7b") >= len(done)
    finished = _last_sum(series, "vllm:request_generation_tokens_sum", "mistral-7b")
    assert finished == result.output[done].sum()
    assert _last_sum(series, "vllm:generation_tokens_total", "mistral-7b") >= finished


def test_memory_and_nodes_are_the_profiles_and_the_scenarios(
    runs: tuple[SimulationResult, SimulationResult],
) -> None:
    """Working set: the profile's memory for every pod sample; allocatable: the nodes'."""
    result, _ = runs
    series = _series(result)
    memory = [
        (dict(labels)["pod"], v)
        for (name, labels), points in series.items()
        if name == "container_memory_working_set_bytes"
        for _, v in points
    ]
    gib = {"tinyllama": result.memory_gib[0], "mixtral-8x7b": result.memory_gib[1]}
    assert memory
    for pod, value in memory:
        model = pod.rsplit("-sim-", 1)[0]
        assert value == gib[model] * engine_metrics.GIB
    nodes = {
        dict(labels)["node"]: points[-1][1]
        for (name, labels), points in series.items()
        if name == "kube_node_status_allocatable"
    }
    assert nodes == {n.name: n.allocatable_gib * engine_metrics.GIB for n in result.nodes}
