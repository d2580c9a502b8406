"""``scaler bench``: the suite's files, the figures per shape, the order, the JSON and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation.bench import BenchError, bench_tables, run_bench, suite_files
from tests.builders import ROOT

SUITE = ROOT / "simulations" / "bench"
HOMELAB = ROOT / "simulations" / "homelab.yaml"


def test_suite_files_are_the_bundled_shapes_and_the_homelab_scenario() -> None:
    """The default bench: homelab first, then every scenario file of the suite folder."""
    files = suite_files(SUITE, [], HOMELAB)
    assert files[0] == HOMELAB
    assert {p.name for p in files[1:]} == {p.name for p in SUITE.glob("*.yaml")}
    assert len(files) >= 7


def test_suite_files_name_what_is_missing(tmp_path: Path) -> None:
    """A missing folder, an empty one, or a missing scenario file is a BenchError naming it."""
    with pytest.raises(BenchError, match="suite folder not found"):
        suite_files(tmp_path / "nope", [], None)
    with pytest.raises(BenchError, match="no scenario files"):
        suite_files(tmp_path, [], None)
    with pytest.raises(BenchError, match=r"missing\.yaml: scenario file not found"):
        suite_files(None, [tmp_path / "missing.yaml"], None)


def test_bench_scores_every_policy_against_the_oracle_and_puts_the_worst_last() -> None:
    """Two shapes, three policies: ratios are GiB-h over the oracle's; scaler's worst last."""
    files = [SUITE / "sparse-sessions.yaml", HOMELAB]
    result = run_bench(files, ["scaler", "kpa"], workers=1)
    assert result.policies == ("scaler", "kpa", "oracle")
    for shape in result.shapes:
        oracle = shape.score("oracle")
        assert oracle is not None
        assert oracle.cost_ratio == 1.0
        for score in shape.scores:
            assert score.cost_ratio == pytest.approx(score.gib_hours / oracle.gib_hours, 1e-3)
            for model, figures in score.models.items():
                expected = figures.slo_attainment - oracle.models[model].slo_attainment
                assert figures.slo_gap == pytest.approx(expected)
    keys = [s.score("scaler") for s in result.shapes]
    assert all(k is not None for k in keys)
    gaps = [min(0.0, k.worst_slo_gap) * -100 + k.cost_ratio for k in keys if k is not None]
    assert gaps == sorted(gaps)
    assert result.worst_cost_ratio("scaler") == max(k.cost_ratio for k in keys if k is not None)
    titles = [str(t.title) for t in bench_tables(result)]
    assert titles[-1] == "summary over 2 shapes"


def test_bench_cli_prints_the_tables_and_writes_json(tmp_path: Path) -> None:
    """`scaler bench --scenario F --baseline kpa --json` runs kpa and the oracle on F."""
    shape = tmp_path / "shape.yaml"
    text = (SUITE / "sparse-sessions.yaml").read_text()
    shape.write_text(
        text.replace("../../policies", str(ROOT / "policies")).replace(
            "durationSeconds: 14400", "durationSeconds: 1800"
        )
    )
    out = tmp_path / "bench.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "bench",
            "--scenario",
            str(shape),
            "--baseline",
            "kpa",
            "--json",
            str(out),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "summary over 1 shapes" in result.output
    document = json.loads(out.read_text())
    assert document["policies"] == ["kpa", "oracle"]
    (only,) = document["shapes"]
    assert set(only["policies"]) == {"kpa", "oracle"}
    assert only["policies"]["oracle"]["cost_ratio"] == 1.0
    assert set(only["policies"]["kpa"]["report"]) == {
        "scenario", "policy", "duration_s", "wall_s", "models", "total"
    }  # fmt: skip
    assert set(document["summary"]["kpa"]) == {"worst_cost_ratio", "worst_slo_gap"}


def test_bench_cli_reports_a_broken_scenario_by_file(tmp_path: Path) -> None:
    """A suite with an invalid scenario fails before running anything, naming the file."""
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(SUITE / "flash-crowd.yaml", suite / "flash-crowd.yaml")
    broken = (SUITE / "diurnal-a.yaml").read_text().replace("seed: 11", "seed: eleven")
    (suite / "broken.yaml").write_text(broken)
    result = CliRunner().invoke(app, ["bench", "--suite", str(suite), "--workers", "1"])
    assert result.exit_code == 1
    assert "broken.yaml" in result.output
    assert "seed" in result.output
