"""What `scaler tune` writes: a minimal edit of the original policy file (comments kept),
its file mode, values an operator would write, and no defaults when there is no original."""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scaler.cli import app
from scaler.core import ModelPolicy
from scaler.policy import check_file, load_policies
from scaler.policy.edit import EditError, changed_fields, edit_values, policy_yaml
from scaler.simulation.tune import (
    Candidate,
    Parameters,
    TuneResult,
    apply,
    operator_value,
    policy_file,
    write_policy,
)
from tests.builders import POLICIES
from tests.simulation.scenario_builders import write_tiny_scenario

runner = CliRunner()


def tuned(base: ModelPolicy, parameters: Parameters) -> TuneResult:
    chosen = Candidate(parameters, apply(base, parameters), 10.0, 0.99, 1.0)
    return TuneResult(base.model, 0.95, (chosen,), (chosen,), chosen)


@pytest.fixture
def mixtral(tmp_path: Path) -> tuple[Path, ModelPolicy]:
    """A copy of the shipped Mixtral policy file (mode 0640) and its policy."""
    original = tmp_path / "policies" / "mixtral-8x7b.yaml"
    original.parent.mkdir()
    original.write_text((POLICIES / "mixtral-8x7b.yaml").read_text())
    original.chmod(0o640)
    (policy,) = load_policies(original)
    return original, policy


def test_counts_are_whole_requests_and_rates_two_significant_digits() -> None:
    """inflightRequests 3 × 1.5 is 5 (not 4.5), queueDepth never below 1; rates rounded."""
    assert operator_value("inflightRequests", 4.5) == 5
    assert operator_value("queueDepth", 2 * 0.25) == 1
    assert operator_value("queueDepth", 1.5) == 2
    assert operator_value("tokensPerSecond", 9 * 0.75) == 6.8
    assert operator_value("requestRate", 0.15 * 0.75) == 0.11


def test_the_evaluated_candidate_is_the_rounded_policy(
    mixtral: tuple[Path, ModelPolicy],
) -> None:
    """apply() rounds: what was simulated is what gets written."""
    _, base = mixtral
    policy = apply(base, Parameters(1.5, 0.0, 60.0, 300.0))
    assert base.targets.inflight_requests == 3
    assert policy.targets.inflight_requests == 5
    assert policy.targets.tokens_per_second == 7.5
    assert policy.targets.request_rate == 0.045


def test_the_tuned_file_is_the_original_with_only_the_tuned_values_changed(
    mixtral: tuple[Path, ModelPolicy], tmp_path: Path
) -> None:
    """A diff against the original shows the header and the changed values, nothing else;
    every comment of the original is still there; the file validates."""
    original, base = mixtral
    result = tuned(base, Parameters(1.5, 30.0, 180.0, 900.0))
    assert result.chosen is not None
    out = tmp_path / "mixtral-8x7b.tuned.yaml"
    write_policy(result.chosen.policy, out, source=result, original=original, base=base)
    before = original.read_text().splitlines()
    after = out.read_text().splitlines()
    removed = [line for line in difflib.ndiff(before, after) if line.startswith("- ")]
    added = [line for line in difflib.ndiff(before, after) if line.startswith("+ ")]
    changed = changed_fields(base, result.chosen.policy)
    assert len(removed) == len(changed)  # one line per tuned value
    assert len(added) == len(changed) + 2  # and the two header lines
    assert after[0].startswith("# Tuned by `scaler tune --model mixtral-8x7b`")
    assert "  inflightRequests: 5         # -np 2 slots + 1 waiting" in out.read_text()
    for line in before:
        if "#" in line:
            comment = line[line.index("#") :]
            assert any(comment in a for a in after), comment
    policy, errors = check_file(out)
    assert errors == []
    assert policy == result.chosen.policy


def test_the_tuned_file_keeps_the_mode_of_the_file_it_came_from(
    mixtral: tuple[Path, ModelPolicy], tmp_path: Path
) -> None:
    """0640 stays 0640; a file replaced keeps its own mode; never the 0600 of a temp file."""
    original, base = mixtral
    result = tuned(base, Parameters(0.75, 0.0, 60.0, 300.0))
    assert result.chosen is not None
    out = tmp_path / "new.yaml"
    write_policy(result.chosen.policy, out, source=result, original=original, base=base)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    out.chmod(0o664)
    write_policy(result.chosen.policy, out, source=result, original=original, base=base)
    assert stat.S_IMODE(out.stat().st_mode) == 0o664


def test_without_an_original_the_file_follows_the_umask_and_writes_no_defaults(
    mixtral: tuple[Path, ModelPolicy], tmp_path: Path
) -> None:
    """No `queries: {}`, no `service: {}`, no `data:` at its defaults; mode 0666 & ~umask."""
    _, base = mixtral
    result = tuned(base, Parameters(2.0, 0.0, 60.0, 300.0))
    assert result.chosen is not None
    out = tmp_path / "alone.yaml"
    old = os.umask(0o022)
    try:
        write_policy(result.chosen.policy, out, source=result)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    document = yaml.safe_load(out.read_text())
    for default in ("queries", "service", "data", "tolerance"):
        assert default not in document
    policy, errors = check_file(out)
    assert errors == []
    assert policy == result.chosen.policy


def test_re_tuning_a_tuned_file_replaces_its_header(
    mixtral: tuple[Path, ModelPolicy], tmp_path: Path
) -> None:
    """The header of an earlier tune is replaced, not stacked."""
    original, base = mixtral
    first = tuned(base, Parameters(1.5, 0.0, 60.0, 300.0))
    assert first.chosen is not None
    write_policy(first.chosen.policy, original, source=first, original=original, base=base)
    (again,) = load_policies(original)
    second = tuned(again, Parameters(0.75, 0.0, 60.0, 300.0))
    assert second.chosen is not None
    write_policy(second.chosen.policy, original, source=second, original=original, base=again)
    assert original.read_text().count("# Tuned by") == 1


def test_values_are_edited_in_place_keeping_comment_columns() -> None:
    """A longer or shorter number keeps a trailing comment in its column; flow mappings
    are edited too; a path that is not a plain number in the text (or is absent from a flow
    mapping) is refused."""
    text = "a: 1\nt:\n  x: 9          # c\n  y: {p: 1, q: 2}\n  s: '3'\n"
    edited = edit_values(text, {("t", "x"): 6.8, ("t", "y", "q"): 30.0})
    assert edited == "a: 1\nt:\n  x: 6.8        # c\n  y: {p: 1, q: 30}\n  s: '3'\n"
    with pytest.raises(EditError):
        edit_values(text, {("t", "y", "missing"): 1.0})
    with pytest.raises(EditError):
        edit_values(text, {("t", "s"): 4.0})


def test_policy_file_finds_the_file_that_holds_the_policy(
    mixtral: tuple[Path, ModelPolicy],
) -> None:
    original, base = mixtral
    assert policy_file(base, original.parent) == original
    assert policy_file(apply(base, Parameters(2.0, 0.0, 60.0, 300.0)), original.parent) is None
    assert "queries" not in policy_yaml(base)


def test_tune_command_writes_an_edit_of_the_scenarios_policy_file(tmp_path: Path) -> None:
    """End to end: the tuned file's lines are the original's but for the tuned values."""
    tiny = write_tiny_scenario(tmp_path)
    output = tmp_path / "tinyllama.tuned.yaml"
    result = runner.invoke(
        app,
        ["tune", "--scenario", str(tiny), "--model", "tinyllama", "--candidates", "4",
         "--workers", "1", "--slo-target", "0", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    def without_aim(lines: list[str]) -> list[str]:
        return [line for line in lines if not line.startswith("  aimPercentile: ")]

    original = without_aim((POLICIES / "tinyllama.yaml").read_text().splitlines())
    written = output.read_text().splitlines()
    assert written[0].startswith("# Tuned by")
    # A sized policy's tuned values: the hold cap and idle period in place, the aim edited
    # in place or added to `sizing:` unless it is the SLO's own percentile (the default).
    body = without_aim(written[2:])
    assert len(written) - 2 - len(body) in (0, 1)
    assert len(body) == len(original)
    kept = sum(a == b for a, b in zip(original, body, strict=True))
    assert kept >= len(original) - 7  # at most the 4 targets and 3 windows differ
