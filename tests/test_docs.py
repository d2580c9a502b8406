"""The documentation stays whole: links resolve, references point inside the repository, and
every flag, metric name, reason, alert and policy key the code has is documented in docs/."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from scaler import metric_names
from scaler.cli import app
from scaler.core import ModelPolicy, Reason
from tests.builders import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LONGEST_CELL = 240
"""Characters a table cell may hold: a reference table is read across, not scrolled."""
# Each name has one letter in brackets, so that neither this file nor a plain grep for the
# names finds the pattern itself.
OUTSIDE = re.compile(
    r"\.\./share[d]\b|\bshare[d]/referenc[e]\b|\breferenc[e]/[\w-]+\.(md|json)\b"
    r"|\bARCHITECTUR[E]\.md\b"
    r"|\b(autoscaler-baseline[s]|decision-anchor[s]|hpa-algorith[m]|llm-serving-metric[s]"
    r"|tooling-note[s]|external-metrics-ap[i])\.md\b"
)
"""References to notes a reader of the repository does not have."""

# Folders that are not the project's content (tools' caches, build output, run results).
_SKIPPED_DIRS = {".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "build"}
_SKIPPED_SUFFIXES = {".csv", ".png", ".pyc", ".gguf"}


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    kept = "".join(
        c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN"
    )  # letters, digits, and the three separators
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown page (duplicates numbered as GitHub does)."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose(path.read_text()):
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of README.md and docs/*.md names a file that exists, and an
    anchor that is one of that page's headings."""
    broken = []
    for number, line in _prose(page.read_text()):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                broken.append(f"{_page_id(page)}:{number}: {target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{_page_id(page)}:{number}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def _project_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & _SKIPPED_DIRS or any(p.endswith(".egg-info") for p in parts):
            continue
        if "results" in parts and "simulations" in parts:
            continue
        if path.is_file() and path.suffix not in _SKIPPED_SUFFIXES:
            yield path


def _project_lines() -> Iterator[tuple[Path, int, str]]:
    """(file, line number, line) over every text file of `_project_files`."""
    for path in _project_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            yield path, number, line


def test_nothing_refers_to_files_outside_the_repository() -> None:
    """No file points readers at notes they do not have: a folder beside the checkout, a
    folder of reference notes, or an architecture file that is not in the repository."""
    found = []
    for path, number, line in _project_lines():
        if OUTSIDE.search(line):
            found.append(f"{_page_id(path)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_reference_check_sees_such_a_reference() -> None:
    """The pattern of the test above matches what it is meant to find."""
    # Spelled in pieces, so that a grep of the repository for these names stays empty.
    notes, folder, design = "sha" + "red", "refer" + "ence", "ARCHI" + "TECTURE"
    samples = (
        f"see ../{notes}/{folder}/x.md",
        f"({folder}/hpa_cases.json)",
        f"{design}.md",
        "(llm-serving-" + "metrics.md)",
    )
    for line in samples:
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("docs/api.md, the Kubernetes API reference")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_giant_table_cells(page: Path) -> None:
    """Table cells stay short enough to read across; longer text goes below the table."""
    long = []
    for number, line in _prose(page.read_text()):
        if not line.startswith("|"):
            continue
        for cell in re.split(r"(?<!\\)\|", line.strip().strip("|")):
            if len(cell.strip()) > LONGEST_CELL:
                long.append(f"{_page_id(page)}:{number}: {len(cell.strip())} characters")
    assert not long, "\n".join(long)


# --- the command line -----------------------------------------------------------------------


def _flags_by_command() -> dict[str, set[str]]:
    """Every command's flags by the command's name, '' for `scaler` itself (typer bundles
    its own click, so the objects are read by their attributes)."""
    group = typer.main.get_command(app)
    commands = {"": group, **getattr(group, "commands", {})}
    return {
        name: {
            flag
            for param in command.params
            if param.param_type_name == "option"
            for flag in (*param.opts, *param.secondary_opts)
        }
        for name, command in commands.items()
    }


def _documented_flags() -> dict[str, set[str]]:
    """Per `## \\`scaler NAME\\`` section of docs/cli.md, the flags in its tables' first column."""
    sections: dict[str, set[str]] = {}
    current: str | None = None
    for _, line in _prose((DOCS / "cli.md").read_text()):
        heading = re.match(r"^## `scaler ?([a-z-]*)`\s*$", line)
        if heading:
            current = heading.group(1)
            sections[current] = set()
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("|") and not line.startswith("|---"):
            first = line.strip("|").split("|")[0]
            sections[current] |= set(re.findall(r"--[a-z][a-z0-9-]*", first))
    return sections


def test_every_command_has_a_section_in_the_cli_docs() -> None:
    """docs/cli.md has one section per command (and one for `scaler` itself), no more."""
    assert set(_documented_flags()) == set(_flags_by_command())


@pytest.mark.parametrize("name", sorted(_flags_by_command()), ids=lambda n: n or "scaler")
def test_cli_docs_list_exactly_the_flags_the_command_takes(name: str) -> None:
    """Every flag a command accepts is in its table in docs/cli.md, and the table lists none
    it does not accept (`--help` goes with every command)."""
    documented = _documented_flags()[name] - {"--help"}
    assert documented == _flags_by_command()[name]


def test_the_flag_reader_sees_the_tables() -> None:
    """The reader above finds simulate's flags (so an empty section cannot pass unseen)."""
    assert {"--scenario", "--rate-scale", "--openmetrics"} <= _documented_flags()["simulate"]


# --- names and keys the docs must cover -----------------------------------------------------


def _exported_names() -> set[str]:
    names = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    names |= set(metric_names.EXTERNAL_METRICS)
    return names - {metric_names.MODEL_LABEL}


@pytest.mark.parametrize("name", sorted(_exported_names()))
def test_every_exported_metric_is_documented(name: str) -> None:
    """docs/metrics.md names every metric in scaler.metric_names."""
    assert f"`{name}`" in (DOCS / "metrics.md").read_text()


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_is_documented(reason: Reason) -> None:
    """docs/decisions.md's table has every Reason (event reasons, dashboard labels)."""
    assert f"| `{reason.value}` |" in (DOCS / "decisions.md").read_text()


def test_every_alert_is_documented() -> None:
    """docs/monitoring.md has a row for every alert the PrometheusRule ships."""
    rule = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheus-rule.yaml").read_text())
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    page = (DOCS / "monitoring.md").read_text()
    assert alerts
    assert [a for a in alerts if f"| `{a}` |" not in page] == []


def _policy_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key a policy file may hold, dotted, camelCase (leaves and free-form maps)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        nested = [
            t
            for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if nested:
            yield from _policy_keys(nested[0], f"{key}.")
        else:
            yield key


@pytest.mark.parametrize("key", sorted(_policy_keys(ModelPolicy)))
def test_every_policy_key_is_documented(key: str) -> None:
    """docs/formats.md's policy tables name every key of the schema."""
    page = (DOCS / "formats.md").read_text()
    section = page[page.index("## Policy files") : page.index("## Scenarios")]
    assert f"`{key}`" in section


_TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_tests_named_in_the_docs_exist(page: Path) -> None:
    """A test the docs name as proof (`tests/x.py::test_y`) exists under that name."""
    missing = []
    for path, name in _TEST_REFERENCE.findall(page.read_text()):
        source = ROOT / path
        if not source.exists():
            missing.append(path)
        elif name and not re.search(rf"^\s*(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, missing


def test_readme_opens_with_the_two_commands() -> None:
    """The README's first code block is the two commands a new user runs: the simulator on
    its bundled scenario, then the test suite."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == [
        "pip install . && scaler simulate",
        "pip install -e '.[test]' && scripts/test",
    ]


def test_every_docs_path_named_anywhere_exists() -> None:
    """A comment or docstring that sends the reader to `docs/<page>` names a page that is
    there (links are checked above; this covers code, manifests and policy files)."""
    # Our pages sit at docs/<page> (and docs/dry-run/<file>); deeper paths are other projects'.
    named = re.compile(r"(?<![\w/])docs/(?:dry-run/)?[\w-]+\.(?:md|py|yml)\b")
    missing = []
    for path, number, line in _project_lines():
        for found in named.findall(line):
            if "://" not in line and not (ROOT / found).exists():
                missing.append(f"{_page_id(path)}:{number}: {found}")
    assert not missing, "\n".join(missing)
