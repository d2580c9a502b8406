"""Load and validate policies/*.yaml, reporting every error with file, line and field path.

The schema itself is ``scaler.core.policy.ModelPolicy``; this module does the file work:
YAML parsing (syntax errors keep their line), one document per file, mapping pydantic's
error locations back to YAML lines, and the checks that span files (the same model twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from scaler.core.policy import ModelPolicy

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PolicyError:
    """One problem in one policy file."""

    file: Path
    field: str  # dotted field path as written in YAML ("targets.queueDepth"), "" for the file
    message: str
    line: int | None = None  # 1-based

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PolicyLoadError(Exception):
    """Raised by ``load_policies`` when any file is invalid; carries every error found."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def policy_files(path: Path) -> list[Path]:
    """The policy files at `path`: the file itself, or the YAML files of a folder, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    return [path]


def check_policies(paths: Iterable[Path]) -> tuple[list[ModelPolicy], list[PolicyError]]:
    """Validate every file under `paths`; returns the valid policies and all errors found."""
    policies: list[ModelPolicy] = []
    errors: list[PolicyError] = []
    files = [f for p in paths for f in policy_files(p)]
    if not files:
        errors.extend(
            PolicyError(Path(p), "", "no policy files (*.yaml, *.yml) found") for p in paths
        )
    seen: dict[str, Path] = {}
    for file in files:
        policy, file_errors = check_file(file)
        errors.extend(file_errors)
        if policy is None:
            continue
        if policy.model in seen:
            errors.append(
                PolicyError(
                    file,
                    "model",
                    f"model {policy.model!r} is already defined in {seen[policy.model]}",
                )
            )
            continue
        seen[policy.model] = file
        policies.append(policy)
    return policies, errors


def load_policies(*paths: Path) -> list[ModelPolicy]:
    """The policies under `paths`, or PolicyLoadError listing every problem."""
    policies, errors = check_policies(paths)
    if errors:
        raise PolicyLoadError(errors)
    return policies


def check_file(file: Path) -> tuple[ModelPolicy | None, list[PolicyError]]:
    """Validate one policy file: (the policy or None, the errors)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [PolicyError(file, "", f"cannot read file: {exc}")]
    try:
        documents = list(yaml.compose_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [PolicyError(file, "", f"YAML syntax error: {problem}", line)]
    documents = [d for d in documents if d is not None]
    if not documents:
        return None, [PolicyError(file, "", "empty file: expected one policy document")]
    if len(documents) > 1:
        line = documents[1].start_mark.line + 1
        return None, [
            PolicyError(file, "", "expected one policy document per file, found several", line)
        ]
    root = documents[0]
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return None, [
            PolicyError(
                file,
                "",
                f"expected a mapping of policy fields, got {type(data).__name__}",
                root.start_mark.line + 1,
            )
        ]
    try:
        return ModelPolicy.model_validate(data), []
    except ValidationError as exc:
        return None, [_to_error(file, root, err) for err in exc.errors()]


def _to_error(file: Path, root: yaml.Node, err: object) -> PolicyError:
    """One pydantic error as a PolicyError with the YAML field path and line."""
    assert isinstance(err, dict)
    loc = tuple(err.get("loc", ()))
    message = str(err.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
    loc = _yaml_path(loc)
    field = ".".join(str(p) for p in loc)
    line = _line_of(root, loc)
    return PolicyError(file, field or "", message, line)


def _yaml_path(loc: Sequence[object]) -> tuple[object, ...]:
    """Pydantic's error location with Python field names turned into their YAML keys.

    Errors on defaulted fields (validate_default) carry the Python name; user keys (the
    `queries` mapping, unknown fields) are left as written.
    """
    path: list[object] = []
    model: type[BaseModel] | None = ModelPolicy
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            path.append(part)
            model = None
            continue
        path.append(field.alias or part)
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return tuple(path)


def _line_of(root: yaml.Node, loc: Sequence[object]) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1
