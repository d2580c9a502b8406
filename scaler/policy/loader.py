"""Load and validate policies/*.yaml, reporting every error with file, line and field path.

The schema itself is ``scaler.core.policy.ModelPolicy``; this module does the file work:
YAML parsing (syntax errors keep their line), one document per file, mapping pydantic's
error locations back to YAML lines, and the checks that span files (the same model twice).

Hostile or broken YAML is an error with its line, never an exception: a tag the safe loader
does not know (``!custom``, ``!!python/object/apply``), nesting deeper than `MAX_DEPTH`, an
integer with more digits than Python converts (4,300). A key given twice in one mapping is a
warning (the last one wins, as in YAML loaders generally). Each file is parsed once, and
error lines are looked up through a per-mapping index, so a file with 40,000 unknown keys is
checked in linear time.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from scaler.core.policy import ModelPolicy

POLICY_SUFFIXES = (".yaml", ".yml")
MAX_DEPTH: Final = 64
"""Deepest nesting of YAML collections accepted (a policy needs four)."""


@dataclass(frozen=True, slots=True)
class PolicyError:
    """One problem in one policy file."""

    file: Path
    field: str  # dotted field path as written in YAML ("targets.queueDepth"), "" for the file
    message: str
    line: int | None = None  # 1-based
    warning: bool = False  # reported, but the file still loads (a duplicate key)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.field}: {message}" if self.field else f"{where}: {message}"


def fatal(errors: Iterable[PolicyError]) -> list[PolicyError]:
    """The errors among `errors` that stop a file from loading (not the warnings)."""
    return [e for e in errors if not e.warning]


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
    """Validate every file under `paths`; returns the valid policies and all errors found
    (warnings included: see `fatal`)."""
    policies: list[ModelPolicy] = []
    errors: list[PolicyError] = []
    files = [f for p in paths for f in policy_files(p)]
    if not files:
        errors.extend(
            PolicyError(Path(p), "", "no policy files (*.yaml, *.yml) found") for p in paths
        )
    seen: dict[str, str] = {}  # model -> "file:line" of its first definition
    for file in files:
        policy, file_errors, root = _check(file)
        errors.extend(file_errors)
        if policy is None:
            continue
        line = _NodeLines(root).line_of(("model",)) if root is not None else None
        if policy.model in seen:
            errors.append(
                PolicyError(
                    file,
                    "model",
                    f"model {policy.model!r} is already defined in {seen[policy.model]}",
                    line,
                )
            )
            continue
        seen[policy.model] = f"{file}:{line}" if line else str(file)
        policies.append(policy)
    return policies, errors


def load_policies(*paths: Path) -> list[ModelPolicy]:
    """The policies under `paths`, or PolicyLoadError listing every problem (warnings do not
    stop loading)."""
    policies, errors = check_policies(paths)
    if fatal(errors):
        raise PolicyLoadError(errors)
    return policies


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with a nesting limit and a note of each duplicate key."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.duplicates: list[tuple[str, int]] = []  # (key, 1-based line)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # The composer recurses once per level: bound it before Python's stack does.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        self.duplicates.append((str(key.value), key.start_mark.line + 1))
                    seen.add(key.value)
        return super().construct_mapping(node, deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    try:
        return int(loader.construct_yaml_int(node))
    except ValueError:  # Python refuses to convert more than 4,300 digits
        raise ConstructorError(
            None, None, f"integer with {len(node.value)} characters is too large", node.start_mark
        ) from None


_PolicyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _yaml_error(file: Path, exc: yaml.YAMLError) -> PolicyError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    kind = "YAML error" if isinstance(exc, ConstructorError) else "YAML syntax error"
    return PolicyError(file, "", f"{kind}: {problem}", line)


def check_file(file: Path) -> tuple[ModelPolicy | None, list[PolicyError]]:
    """Validate one policy file: (the policy or None, the errors and warnings)."""
    policy, errors, _ = _check(file)
    return policy, errors


def _check(file: Path) -> tuple[ModelPolicy | None, list[PolicyError], yaml.Node | None]:
    """`check_file`, and the document's root node (for the lines of cross-file errors)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [PolicyError(file, "", f"cannot read file: {exc}")], None
    loader = _PolicyLoader(text)
    try:
        documents: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                documents.append(node)
            if len(documents) > 1:
                line = documents[1].start_mark.line + 1
                message = "expected one policy document per file, found several"
                return None, [PolicyError(file, "", message, line)], None
        if not documents:
            return None, [PolicyError(file, "", "empty file: expected one policy document")], None
        root = documents[0]
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        return None, [_yaml_error(file, exc)], None
    except RecursionError:  # a safety net: MAX_DEPTH stops real files long before
        message = f"YAML nested deeper than {MAX_DEPTH} levels"
        return None, [PolicyError(file, "", message)], None
    finally:
        loader.dispose()
    warnings = [
        PolicyError(file, key, "duplicate key: the last value is used", line, warning=True)
        for key, line in loader.duplicates
    ]
    if not isinstance(data, dict):
        message = f"expected a mapping of policy fields, got {type(data).__name__}"
        return None, [PolicyError(file, "", message, root.start_mark.line + 1)], root
    foreign = _not_a_policy(data)
    if foreign is not None:
        return None, [PolicyError(file, "", foreign, root.start_mark.line + 1)], root
    try:
        return ModelPolicy.model_validate(data), warnings, root
    except ValidationError as exc:
        lines = _NodeLines(root)
        details = exc.errors()
        # A misspelt required key is one mistake: "did you mean" says it, "Field required"
        # for the key it meant would only repeat it.
        meant = {
            (*_yaml_path(tuple(d["loc"])[:-1]), guess)
            for d in details
            if d["type"] == "extra_forbidden" and (guess := _near_miss(tuple(d["loc"])))
        }
        found = [
            _to_error(file, lines, d)
            for d in details
            if not (d["type"] == "missing" and _yaml_path(tuple(d["loc"])) in meant)
        ]
        return None, warnings + found, root


POLICY_KEYS: Final = frozenset(f.alias or name for name, f in ModelPolicy.model_fields.items())
"""The top-level keys of a policy file."""


def _not_a_policy(data: dict[Any, Any]) -> str | None:
    """Why `data` is not a policy at all (a Kubernetes object, a file of other keys), or
    None when it is meant as one: then its field errors are the useful answer."""
    if "model" in data and "apiVersion" not in data:
        return None
    if "apiVersion" in data or "kind" in data:
        kind = data.get("kind")
        what = f"a Kubernetes {kind}" if isinstance(kind, str) else "a Kubernetes object"
        version = data.get("apiVersion")
        if isinstance(version, str):
            what += f" ({version})"
        return (
            f"this is not a policy: it is {what}. A policy file names model, target, engine, "
            "class, replicas, targets... (see policies/*.yaml); scenarios have kind: Scenario"
        )
    if not POLICY_KEYS & {str(k) for k in data}:
        return (
            "this is not a policy: none of its keys is a policy field (model, target, engine, "
            "class, replicas, targets...; see policies/*.yaml)"
        )
    return None


def _to_error(file: Path, lines: _NodeLines, err: object) -> PolicyError:
    """One pydantic error as a PolicyError with the YAML field path and line."""
    assert isinstance(err, dict)
    loc = tuple(err.get("loc", ()))
    message = str(err.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
        guess = _near_miss(loc)
        if guess is not None:
            message += f"; did you mean `{guess}`?"
    loc = _yaml_path(loc)
    field = ".".join(str(p) for p in loc)
    line = lines.line_of(loc)
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


def _near_miss(loc: Sequence[object]) -> str | None:
    """The field of the mapping at `loc[:-1]` that the unknown key `loc[-1]` is closest to
    (``tolerence`` → ``tolerance``), if one is close enough to be a typo."""
    if not loc:
        return None
    model: type[BaseModel] | None = ModelPolicy
    for part in loc[:-1]:
        if model is None:
            return None
        model = _section(model, str(part))
    if model is None:
        return None
    keys = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.75)
    return close[0] if close else None


def _section(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model class of the field `key` (Python name or YAML key) of `model`, if any."""
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            annotation = field.annotation
            candidates = [annotation, *getattr(annotation, "__args__", ())]
            return next(
                (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
            )
    return None


class _NodeLines:
    """Lines of YAML nodes by field path; each mapping's keys are indexed once, on first use,
    so looking up many errors costs their number, not errors × keys."""

    def __init__(self, root: yaml.Node) -> None:
        self._root = root
        self._keys: dict[int, dict[str, yaml.Node]] = {}

    def _child(self, node: yaml.MappingNode, key: str) -> yaml.Node | None:
        index = self._keys.get(id(node))
        if index is None:
            index = {}
            for k, v in node.value:
                index.setdefault(str(k.value), v)  # the first one, as the line reported
            self._keys[id(node)] = index
        return index.get(key)

    def line_of(self, loc: Sequence[object]) -> int | None:
        """The 1-based line of the node at `loc`, or of its nearest existing parent."""
        node = self._root
        for part in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                child = self._child(node, str(part))
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                child = node.value[part]
            if child is None:
                break
            node = child
        return node.start_mark.line + 1
