"""Validation messages a new user meets: a line for the duplicate, "not a policy" for a
Kubernetes manifest, "did you mean" for a typo, no follow-on errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from scaler.cli import app
from scaler.policy import check_policies
from scaler.simulation.scenario import check_scenario
from tests.builders import POLICIES, ROOT

runner = CliRunner()
HPA = ROOT / "manifests" / "base" / "horizontal-pod-autoscaler-mistral-7b.yaml"


def test_a_duplicate_model_names_both_files_with_their_lines(tmp_path: Path) -> None:
    """The second file's `model:` line is the error's; the first file's is in the message."""
    text = "# a comment\n" + (POLICIES / "tinyllama.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text("\n\n" + text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("model:"))
    _, errors = check_policies([tmp_path])
    (error,) = errors
    assert error.line == line + 2
    assert str(error) == (
        f"{tmp_path / 'b.yaml'}:{line + 2}: model: model 'tinyllama' is already defined in "
        f"{tmp_path / 'a.yaml'}:{line}"
    )


def test_a_kubernetes_manifest_is_not_a_policy_in_one_message() -> None:
    """An HPA manifest: one error saying what it is, not 17 field errors."""
    result = runner.invoke(app, ["validate", str(HPA)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines == [
        f"{HPA}:5: this is not a policy: it is a Kubernetes HorizontalPodAutoscaler "
        "(autoscaling/v2). A policy file names model, target, engine, class, replicas, "
        "targets... (see policies/*.yaml); scenarios have kind: Scenario",
        "1 error(s) found",
    ]


def test_a_mapping_without_any_policy_key_is_not_a_policy(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"image": {"tag": "1"}, "resources": {}}))
    _, errors = check_policies([path])
    (error,) = errors
    assert error.message.startswith("this is not a policy: none of its keys is a policy field")


def test_a_misspelt_key_gets_a_suggestion_and_no_follow_on_error(tmp_path: Path) -> None:
    """`tolerence` → did you mean `tolerance`; a misspelt required key is one error, not
    also "Field required" for the key it meant; far-off keys get no guess."""
    text = (POLICIES / "mistral-7b.yaml").read_text()
    text = text.replace("tolerance:", "tolerence:").replace("placement:", "placment:")
    text = text.replace("slo:", "slo:\n  colour: blue")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    _, errors = check_policies([path])
    messages = {e.field: e.message for e in errors}
    assert messages == {
        "tolerence": "unknown field; did you mean `tolerance`?",
        "placment": "unknown field; did you mean `placement`?",
        "slo.colour": "unknown field",
    }


def test_a_nested_typo_is_matched_against_its_own_section(tmp_path: Path) -> None:
    text = (POLICIES / "mistral-7b.yaml").read_text()
    text = text.replace("  stabilizationSeconds: 150", "  stabilisationSeconds: 150")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    _, errors = check_policies([path])
    (error,) = errors
    assert error.field == "scaleDown.stabilisationSeconds"
    assert error.message == "unknown field; did you mean `stabilizationSeconds`?"


def test_negative_node_memory_is_one_error_per_node_and_no_follow_on(tmp_path: Path) -> None:
    """Every node refused: the nodes are named, without "at least 1 item" on top."""
    scenario = yaml.safe_load((ROOT / "simulations" / "homelab.yaml").read_text())
    for node in scenario["nodes"]:
        node["allocatableGiB"] = -90
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario))
    _, errors = check_scenario(path)
    assert [e.field for e in errors] == [f"nodes.{i}.allocatableGiB" for i in range(3)]
    assert all(e.message == "Input should be greater than 0" for e in errors)
