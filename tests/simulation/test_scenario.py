"""Scenario files: the bundled homelab loads; bad files are refused with line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.simulation.scenario import (
    ScenarioLoadError,
    check_scenario,
    is_scenario_file,
    prepare,
)

ROOT = Path(__file__).resolve().parents[2]
HOMELAB = ROOT / "simulations" / "homelab.yaml"


def test_bundled_homelab_scenario_prepares() -> None:
    """The bundled scenario validates, finds its four policies and builds its traffic."""
    prepared = prepare(HOMELAB)
    assert prepared.models == ("tinyllama", "mistral-7b", "deepseek-coder", "mixtral-8x7b")
    assert [n.allocatable_gib for n in prepared.scenario.nodes] == [90, 90, 90]
    for model in prepared.models:
        assert prepared.trace.count(model) > 10
    assert 1.5 * 3600 < prepared.trace.duration < 2.1 * 3600
    assert prepared.warnings == ()


def test_homelab_traffic_is_reproducible() -> None:
    """Thinning is seeded: two loads give the same requests."""
    a, b = prepare(HOMELAB).trace, prepare(HOMELAB).trace
    assert a.time.tolist() == b.time.tolist()


def test_scenario_files_are_recognized_by_kind(tmp_path: Path) -> None:
    """`kind: Scenario` marks a scenario; a policy file is not one."""
    assert is_scenario_file(HOMELAB)
    assert not is_scenario_file(ROOT / "policies" / "tinyllama.yaml")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BASE = """kind: Scenario
name: t
nodes:
  - {name: a, allocatableGiB: 90}
models:
  tinyllama:
    slots: 4
    prefillTokensPerSecond: 200
    decodeTokensPerSecond: 60
    coldStart: {medianSeconds: 8}
"""


def test_unknown_key_is_reported_with_its_line(tmp_path: Path) -> None:
    """A typo in a profile is an error naming the field path and the line."""
    path = _write(tmp_path, BASE + "    slotz: 3\n")
    scenario, errors = check_scenario(path)
    assert scenario is None
    assert [str(e) for e in errors] == [f"{path}:11: models.tinyllama.slotz: unknown field"]


def test_bad_values_are_reported(tmp_path: Path) -> None:
    """Non-positive speeds and a reversed outage are refused."""
    text = BASE.replace("decodeTokensPerSecond: 60", "decodeTokensPerSecond: 0") + (
        "metrics:\n  metricsOutage: [{startSeconds: 50, endSeconds: 10}]\n"
    )
    _, errors = check_scenario(_write(tmp_path, text))
    messages = [str(e) for e in errors]
    assert any("models.tinyllama.decodeTokensPerSecond" in m for m in messages)
    assert any("metrics.metricsOutage.0" in m and "endSeconds" in m for m in messages)


def test_traffic_for_an_unknown_model_is_refused(tmp_path: Path) -> None:
    """Traffic must target a model of the scenario."""
    text = BASE + "traffic:\n  - {kind: trace, file: x.csv, model: gpt-4}\n"
    _, errors = check_scenario(_write(tmp_path, text))
    assert any("unknown model 'gpt-4'" in str(e) for e in errors)


def test_model_without_policy_is_refused(tmp_path: Path) -> None:
    """Every model of the scenario needs a policy in the policies folder."""
    text = BASE.replace("  tinyllama:", "  phi-3:") + f"policies: {ROOT / 'policies'}\n"
    with pytest.raises(ScenarioLoadError, match=r"models\.phi-3: no policy"):
        prepare(_write(tmp_path, text))


def test_bad_trace_in_scenario_is_reported_with_its_line(tmp_path: Path) -> None:
    """A broken trace file named by the scenario surfaces as file:line."""
    (tmp_path / "t.csv").write_text(
        "timestamp,model,prompt_tokens,output_tokens\n0,tinyllama,-1,1\n"
    )
    text = BASE + f"policies: {ROOT / 'policies'}\ntraffic:\n  - {{kind: trace, file: t.csv}}\n"
    with pytest.raises(ScenarioLoadError, match=r"t\.csv:2: prompt_tokens: negative"):
        prepare(_write(tmp_path, text))
