"""Policy files: the shipped ones load; each kind of bad file gets a precise error."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaler.cli import app
from scaler.policy import PolicyError, PolicyLoadError, check_policies, load_policies
from tests.builders import POLICIES, policy_document

runner = CliRunner()


def write(tmp_path: Path, name: str, document: dict[str, Any] | str) -> Path:
    path = tmp_path / name
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return path


def errors_for(path: Path) -> list[PolicyError]:
    _, errors = check_policies([path])
    return errors


def test_shipped_policies_load() -> None:
    """The four bundled policies are valid and name the four models."""
    policies = load_policies(POLICIES)
    assert sorted(p.model for p in policies) == [
        "deepseek-coder",
        "mistral-7b",
        "mixtral-8x7b",
        "tinyllama",
    ]
    assert [p.model for p in policies if p.on_demand] == ["mixtral-8x7b"]


def test_shipped_policies_select_their_model_in_cortex() -> None:
    """Shipped policies select namespace="cortex", model="<policy name>"."""
    for policy in load_policies(POLICIES):
        assert policy.matchers == ('namespace="cortex"', f'model="{policy.model}"')
        assert policy.target.namespace == "cortex"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"targets": {"queueDepth": "2"}}, "targets.queueDepth", "valid number"),
        ({"replicas": {"max": 2.5}}, "replicas.max", "valid integer"),
        ({"targets": {"queueDepth": 0}}, "targets.queueDepth", "greater than 0"),
        ({"targets": {"tokensPerSecond": -9}}, "targets.tokensPerSecond", "greater than 0"),
        ({"replicas": {"min": 3, "max": 2}}, "replicas", "min (3) is greater than max (2)"),
        ({"engine": "tensorrt"}, "engine", "unknown engine 'tensorrt'"),
        ({"scaleToZero": {"idleSeconds": 60}}, "scaleToZero", "always-on model"),
        ({"matchers": ["model=mistral"]}, "matchers.0", "malformed label matcher"),
        ({"matchers": ['model=~"(("']}, "matchers.0", "invalid regular expression"),
        ({"matchers": []}, "matchers", "at least one label matcher"),
        ({"scaleUp": {"maxStepp": 2}}, "scaleUp.maxStepp", "unknown field"),
        ({"model": "Mistral_7B"}, "model", "not a valid model name"),
        ({"class": "sometimes"}, "class", "unknown class"),
        ({"fallback": {"mode": "down"}}, "fallback.mode", "unknown fallback mode"),
        ({"queries": {"queue_length": "x"}}, "queries", "unknown signal"),
        (
            {
                "targets": {
                    "queueDepth": None,
                    "tokensPerSecond": None,
                    "inflightRequests": None,
                    "requestRate": None,
                }
            },
            "targets",
            "at least one",
        ),
    ],
)
def test_each_kind_of_bad_field_is_reported_with_its_path(
    tmp_path: Path, changes: dict[str, Any], field: str, message: str
) -> None:
    """The error names the file, the YAML field path and the reason."""
    path = write(tmp_path, "bad.yaml", policy_document("mistral-7b", **changes))
    errors = errors_for(path)
    assert any(e.field == field and message in e.message for e in errors), errors
    assert all(e.file == path for e in errors)


def test_on_demand_without_scale_to_zero_is_an_error(tmp_path: Path) -> None:
    """An on-demand model must say when it goes to zero."""
    path = write(tmp_path, "m.yaml", policy_document("mixtral-8x7b", scaleToZero=None))
    assert [e.field for e in errors_for(path)] == ["scaleToZero"]


def test_always_on_with_min_zero_is_an_error(tmp_path: Path) -> None:
    """min 0 belongs to on-demand models only."""
    path = write(tmp_path, "m.yaml", policy_document("tinyllama", replicas={"min": 0}))
    errors = errors_for(path)
    assert [e.field for e in errors] == ["replicas"]
    assert "always-on" in errors[0].message


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """Errors in unrelated fields are all listed, cross-field ones included."""
    document = policy_document(
        "mistral-7b",
        engine="tgi",
        replicas={"min": 4, "max": 2},
        targets={"queueDepth": -1},
        scaleToZero={"idleSeconds": 60},
    )
    fields = {e.field for e in errors_for(write(tmp_path, "bad.yaml", document))}
    assert {"engine", "replicas", "targets.queueDepth", "scaleToZero"} <= fields


def test_errors_carry_the_yaml_line(tmp_path: Path) -> None:
    """The line number points at the offending key in the file."""
    text = (
        (POLICIES / "tinyllama.yaml")
        .read_text()
        .replace("tokensPerSecond: 50", "tokensPerSecond: -5")
    )
    path = write(tmp_path, "t.yaml", text)
    line = next(
        i for i, row in enumerate(text.splitlines(), start=1) if "tokensPerSecond: -5" in row
    )
    (error,) = errors_for(path)
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: targets.tokensPerSecond: ")


def test_yaml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported with the line where the parser stopped."""
    path = write(
        tmp_path, "broken.yaml", "model: tinyllama\ntargets: {queueDepth: 2\nengine: vllm\n"
    )
    (error,) = errors_for(path)
    assert "YAML syntax error" in error.message
    assert error.line == 3


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """An empty (or comment-only) file is not silently skipped."""
    (error,) = errors_for(write(tmp_path, "empty.yaml", "# nothing here\n"))
    assert "empty file" in error.message


def test_non_mapping_document_is_an_error(tmp_path: Path) -> None:
    """A list or scalar at the top is reported as such."""
    (error,) = errors_for(write(tmp_path, "list.yaml", "- a\n- b\n"))
    assert "expected a mapping" in error.message


def test_several_documents_in_one_file_is_an_error(tmp_path: Path) -> None:
    """One policy per file keeps the model-to-file mapping obvious."""
    text = (POLICIES / "tinyllama.yaml").read_text()
    (error,) = errors_for(write(tmp_path, "two.yaml", text + "---\n" + text))
    assert "several" in error.message


def test_same_model_in_two_files_is_an_error(tmp_path: Path) -> None:
    """Two files for one model: the second is reported, naming the first."""
    first = write(tmp_path, "a.yaml", policy_document("tinyllama"))
    second = write(tmp_path, "b.yaml", policy_document("tinyllama"))
    policies, errors = check_policies([tmp_path])
    assert [p.model for p in policies] == ["tinyllama"]
    (error,) = errors
    assert error.file == second
    assert str(first) in error.message


def test_folder_without_policies_is_an_error(tmp_path: Path) -> None:
    """Pointing at an empty folder is an error, not '0 valid policies'."""
    (error,) = errors_for(tmp_path)
    assert "no policy files" in error.message


def test_load_policies_raises_with_all_errors(tmp_path: Path) -> None:
    """load_policies raises one exception carrying every error."""
    write(tmp_path, "a.yaml", policy_document("tinyllama", engine="x"))
    write(tmp_path, "b.yaml", "")
    with pytest.raises(PolicyLoadError) as raised:
        load_policies(tmp_path)
    assert len(raised.value.errors) == 2


def test_cli_validate_passes_on_shipped_policies() -> None:
    """`scaler validate policies/` exits 0 and names the models."""
    result = runner.invoke(app, ["validate", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert "4 valid policies" in result.output


def test_cli_validate_fails_with_every_error(tmp_path: Path) -> None:
    """`scaler validate` exits 1 and prints each error on its own line."""
    write(tmp_path, "a.yaml", policy_document("tinyllama", engine="x", targets={"queueDepth": 0}))
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "engine: unknown engine 'x'" in result.output
    assert "targets.queueDepth: Input should be greater than 0" in result.output
    assert "2 error(s) found" in result.output


SHIPPED = (POLICIES / "tinyllama.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(SHIPPED + "extra: !custom x\n", SHIPPED.count("\n") + 1, "!custom", id="tag"),
        pytest.param(
            SHIPPED + "extra: !!python/object/apply:os.system [echo hi]\n",
            SHIPPED.count("\n") + 1,
            "python/object/apply",
            id="python-tag",
        ),
        pytest.param("model: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested deeper", id="deep"),
        pytest.param(
            SHIPPED.replace("max: ", "max: " + "9" * 4301 + " #", 1),
            None,
            "too large",
            id="4301-digits",
        ),
    ],
)
def test_hostile_yaml_is_a_file_line_error_everywhere(
    tmp_path: Path, text: str, line: int | None, needle: str
) -> None:
    """Unknown tags, deep nesting and huge integers are file:line errors in check_policies,
    `scaler validate`, `serve --policies` and `activator --policies` (no traceback)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    (error,) = errors_for(path)
    assert needle in error.message
    assert error.line is not None
    if line is not None:
        assert error.line == line
    for command in (
        ["validate", str(path)],
        ["serve", "--policies", str(path), "--no-kubernetes"],
        ["activator", "--policies", str(path), "--no-kubernetes"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert f"{path}:{error.line}:" in result.output, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"replicas": {"min": 0, "max": 99999999999999999999}}, "replicas.max"),
        ({"coldStart": {"seconds": 1e308}}, "coldStart.seconds"),
        ({"scaleDown": {"stabilizationSeconds": 1e9}}, "scaleDown.stabilizationSeconds"),
    ],
)
def test_absurd_values_are_refused(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    """A replica count beyond 1,000 or a duration beyond a week is an error naming the field."""
    path = write(tmp_path, "absurd.yaml", policy_document("tinyllama", **changes))
    assert [e.field for e in errors_for(path)] == [field]


def test_a_duplicate_key_is_a_warning_and_the_file_loads(tmp_path: Path) -> None:
    """A key given twice: a warning with its line; the policy loads with the last value."""
    path = tmp_path / "dup.yaml"
    path.write_text(SHIPPED.replace("model: tinyllama\n", "model: x\nmodel: tinyllama\n", 1))
    second = SHIPPED.splitlines().index("model: tinyllama") + 2  # 1-based, after "model: x"
    policies, errors = check_policies([path])
    assert [p.model for p in policies] == ["tinyllama"]
    assert [(e.field, e.line, e.warning) for e in errors] == [("model", second, True)]
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert f"{path}:{second}: model: warning: duplicate key" in result.output


def test_validate_is_linear_in_unknown_keys(tmp_path: Path) -> None:
    """20,000 unknown keys are all reported, each with its own line, and four times the keys
    cost about four times the time, not sixteen (20,000 took 22 s, 40,000 over a minute, when
    each error's line was searched key by key). A ratio of two sizes measured back to back,
    the best of two runs each, so the machine's load cancels out."""

    def best_time(count: int) -> tuple[float, list[Any]]:
        path = tmp_path / f"many-{count}.yaml"
        path.write_text(SHIPPED + "".join(f"unknown{i}: 1\n" for i in range(count)))
        best, errors = math.inf, []
        for _ in range(2):
            started = time.perf_counter()
            errors = errors_for(path)
            best = min(best, time.perf_counter() - started)
        return best, errors

    small, _ = best_time(5_000)
    large, errors = best_time(20_000)
    assert len(errors) == 20_000
    first_line = SHIPPED.count("\n") + 1
    assert errors[-1].line == first_line + 20_000 - 1
    assert large / small < 8.0, f"5k keys {small:.2f} s, 20k keys {large:.2f} s"
