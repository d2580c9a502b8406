"""The warning for traffic no policy can serve: mean demand against replicas.max's capacity."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation.capacity import overloads
from scaler.simulation.scenario import prepare
from scaler.simulation.traces import TokenSizes, poisson
from tests.builders import ROOT, make_policy
from tests.simulation.scenario_builders import make_scenario, write_tiny_scenario

runner = CliRunner()
HOMELAB = ROOT / "simulations" / "homelab.yaml"
AZURE_CONV = ROOT / "simulations" / "traces" / "azure_llm_2023_conv.csv"


def test_a_model_asked_for_more_than_its_max_replicas_serve_is_named_with_both_figures() -> None:
    """tinyllama at 10 req/s of 4 s requests: 40 slots busy on average; max 2 replicas of 4
    slots serve 2 req/s. The overload carries the model, the demand and the capacity."""
    policy = make_policy("tinyllama", replicas={"min": 1, "max": 2})
    # 200-token prompts at 200 tok/s (1 s) + 60 tokens at 60/(1 + 0.5 x 3) = 24 tok/s (2.5 s)
    trace = poisson("tinyllama", rate=10.0, duration=600, sizes=TokenSizes(200, 60), seed=1)
    (overload,) = overloads(make_scenario(trace, policies=[policy]))
    assert overload.model == "tinyllama"
    assert overload.demand_rps == pytest.approx(10.0, rel=0.05)
    assert overload.max_replicas == 2
    assert overload.capacity_rps == pytest.approx(2 * 4 / overload.service_s)
    assert overload.capacity_rps < 3.0
    text = str(overload)
    assert text.startswith("tinyllama: demand 10")
    assert f"{overload.capacity_rps:.3g} req/s" in text
    assert "replicas.max 2" in text
    assert "--rate-scale" in text


def test_traffic_within_capacity_is_not_flagged() -> None:
    """The bundled homelab scenario fits its policies (its traces are scaled for it)."""
    assert overloads(prepare(HOMELAB)) == ()


def test_the_raw_azure_trace_on_mistral_is_flagged_and_the_readme_scaling_is_not() -> None:
    """5.5 req/s onto three CPU Mistral replicas: flagged; docs/cli.md's example scaling
    (--time-scale 2 --rate-scale 0.03, ~0.08 req/s) is within what they serve."""
    from scaler.simulation.command import what_if

    raw = prepare(HOMELAB, trace_specs=[f"{AZURE_CONV}:mistral-7b"])
    (overload,) = overloads(raw)
    assert overload.model == "mistral-7b"
    assert overload.demand_rps > 5
    scaled = what_if(raw, rate_scale=0.03, time_scale=2.0)
    assert overloads(scaled) == ()


def test_simulate_warns_on_stderr_and_still_runs(tmp_path: Path) -> None:
    """The warning goes to stderr before the table; the run itself is not refused."""
    tiny = write_tiny_scenario(tmp_path)
    result = runner.invoke(
        app, ["simulate", "--scenario", str(tiny), "--baseline", "oracle", "--rate-scale", "30"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: tinyllama: demand" in result.stderr
    assert "exceeds what replicas.max" in result.stderr
    assert "tinyllama" in result.stdout
