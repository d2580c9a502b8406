"""`scaler simulate`, `scaler tune` and `scaler validate` on scenarios, through typer's runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from scaler.cli import app
from scaler.policy import check_file
from scaler.simulation import command
from scaler.simulation.command import PROGRESS_AFTER_SECONDS, ProgressBar
from tests.simulation.scenario_builders import write_tiny_scenario

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A 20-minute two-model scenario file with its trace next to it."""
    return write_tiny_scenario(tmp_path)


def test_simulate_writes_json_plots_and_openmetrics(tiny: Path, tmp_path: Path) -> None:
    """Two policies: a table on stdout, a JSON list, PNGs with index.html, OpenMetrics."""
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--scenario",
            str(tiny),
            "--baseline",
            "scaler,oracle",
            "--json",
            str(tmp_path / "r.json"),
            "--out",
            str(out),
            "--openmetrics",
            str(tmp_path / "s.om"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tinyllama" in result.stdout
    assert "oracle" in result.stdout
    reports = json.loads((tmp_path / "r.json").read_text())
    assert [r["policy"] for r in reports] == ["scaler", "oracle"]
    assert (out / "index.html").is_file()
    assert (out / "cost-vs-slo.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "scaler-mixtral-8x7b.png").is_file()
    assert 'src="oracle-tinyllama.png"' in (out / "index.html").read_text()
    assert (tmp_path / "s.om").read_text().endswith("# EOF\n")


def test_simulate_with_one_policy_writes_one_report_object(tiny: Path, tmp_path: Path) -> None:
    """--baseline hpa --json gives the contract object itself."""
    result = runner.invoke(
        app,
        ["simulate", "--scenario", str(tiny), "--baseline", "hpa", "--json", str(tmp_path / "j")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "j").read_text())
    assert report["policy"] == "hpa"
    assert report["scenario"] == "tiny"


def test_simulate_replays_a_trace_given_on_the_command_line(tiny: Path, tmp_path: Path) -> None:
    """--trace FILE:MODEL replaces the scenario's traffic."""
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0,100,10\n2023-11-16 18:15:50.0,100,10\n"
    )
    result = runner.invoke(
        app,
        [
            "simulate",
            "--scenario",
            str(tiny),
            "--trace",
            f"{azure}:tinyllama",
            "--baseline",
            "oracle",
            "--json",
            str(tmp_path / "j"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "j").read_text())
    assert report["models"]["tinyllama"]["requests"] == 2
    assert report["models"]["mixtral-8x7b"]["requests"] == 0


def test_simulate_refuses_an_unknown_baseline(tiny: Path) -> None:
    """An unknown policy name is an error listing the known ones."""
    result = runner.invoke(app, ["simulate", "--scenario", str(tiny), "--baseline", "vpa"])
    assert result.exit_code == 1
    assert "unknown policy 'vpa'" in result.output


def test_simulate_reports_a_bad_trace_with_file_and_line(tiny: Path, tmp_path: Path) -> None:
    """A broken trace stops the run with file:line and exit code 1."""
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,model,prompt_tokens,output_tokens\n0,tinyllama,1,-2\n")
    result = runner.invoke(app, ["simulate", "--scenario", str(tiny), "--trace", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: output_tokens: negative token count -2" in result.output


def test_simulate_without_a_scenario_outside_the_checkout_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-editable install run away from the checkout has no bundled scenario: say so."""
    monkeypatch.chdir(tmp_path)
    installed = tmp_path / "site-packages" / "scaler" / "simulation" / "command.py"
    monkeypatch.setattr(command, "__file__", str(installed))
    result = runner.invoke(app, ["simulate", "--baseline", "oracle"])
    assert result.exit_code == 1
    assert "run from the root of the scaler checkout, or pass --scenario FILE" in result.output


def test_validate_accepts_the_bundled_scenario() -> None:
    """`scaler validate simulations/homelab.yaml` checks schema, policies and traffic."""
    result = runner.invoke(app, ["validate", str(ROOT / "simulations" / "homelab.yaml")])
    assert result.exit_code == 0, result.output
    assert "1 valid scenario: homelab" in result.output


def test_validate_reports_scenario_errors(tiny: Path) -> None:
    """A scenario with a typo fails validation with its line."""
    tiny.write_text(tiny.read_text().replace("drainSeconds", "drainSecs"))
    result = runner.invoke(app, ["validate", str(tiny)])
    assert result.exit_code == 1
    assert "drainSecs: unknown field" in result.output


def test_tune_writes_a_valid_policy_and_prints_the_frontier(tiny: Path, tmp_path: Path) -> None:
    """A tiny search (3 candidates, 2 processes) prints the frontier and writes valid YAML."""
    output = tmp_path / "tuned.yaml"
    result = runner.invoke(
        app,
        [
            "tune",
            "--scenario",
            str(tiny),
            "--model",
            "tinyllama",
            "--candidates",
            "3",
            "--workers",
            "2",
            "--slo-target",
            "0.5",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "frontier" in result.stdout
    assert "chosen" in result.stdout
    policy, errors = check_file(output)
    assert errors == []
    assert policy is not None
    assert policy.model == "tinyllama"


def test_tune_refuses_an_unknown_model(tiny: Path) -> None:
    """Tuning a model outside the scenario is an error."""
    result = runner.invoke(app, ["tune", "--scenario", str(tiny), "--model", "gpt-4"])
    assert result.exit_code == 1
    assert "unknown model 'gpt-4'" in result.output


def test_progress_bar_stays_silent_off_a_terminal() -> None:
    """Not a TTY: no output at all, however long the run."""
    stream = io.StringIO()
    ticks = iter([0.0, 60.0, 60.0])  # the run lasts a minute
    bar = ProgressBar(console=Console(file=stream, force_terminal=False), clock=lambda: next(ticks))
    with bar:
        bar.run("scaler")
        bar(50.0, 100.0)
    assert stream.getvalue() == ""


def test_progress_bar_shows_on_a_terminal_once_a_run_is_long() -> None:
    """On a terminal, a run past the threshold gets a bar with its label."""
    stream = io.StringIO()
    ticks = iter([0.0, 1.0, PROGRESS_AFTER_SECONDS + 1.0])
    console = Console(file=stream, force_terminal=True, width=80)
    bar = ProgressBar(console=console, clock=lambda: next(ticks))
    with bar:
        bar.run("scaler")
        bar(10.0, 100.0)
        assert stream.getvalue() == ""  # a short run shows nothing
        bar(50.0, 100.0)
    assert "scaler" in stream.getvalue()


def test_simulate_what_if_rate_scale_doubles_the_requests(tiny: Path, tmp_path: Path) -> None:
    """--rate-scale 2 replays every request twice (whole factors are exact); --time-scale 2
    stretches the same requests over twice the time."""
    runs = {}
    for label, flags in (
        ("base", []),
        ("double", ["--rate-scale", "2"]),
        ("slow", ["--time-scale", "2"]),
    ):
        out = tmp_path / f"{label}.json"
        result = runner.invoke(
            app,
            ["simulate", "--scenario", str(tiny), "--baseline", "scaler", "--json", str(out),
             *flags],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[label] = json.loads(out.read_text())
    base, double, slow = (
        {m: f["requests"] for m, f in runs[k]["models"].items()} for k in ("base", "double", "slow")
    )
    assert double == {m: 2 * n for m, n in base.items()}
    assert slow == base
    assert runs["slow"]["duration_s"] > 1.8 * (runs["base"]["duration_s"] - 600)


def test_simulate_refuses_a_non_positive_rate_scale(tiny: Path) -> None:
    """A rate scale of 0 is refused by the option itself (nothing would be simulated)."""
    result = runner.invoke(app, ["simulate", "--scenario", str(tiny), "--rate-scale", "0"])
    assert result.exit_code == 2
    assert "rate-scale" in result.output
