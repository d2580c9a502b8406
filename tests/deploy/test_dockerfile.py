"""The Dockerfile builds the image the manifests expect: checked by reading it.

There is no Docker engine here (a client, no daemon), so the image is not built. The test
parses the Dockerfile instead: multi-stage, a pinned slim Python 3.11 base, a non-root USER
in the final stage, no compiler or package-manager installs there, and an ENTRYPOINT whose
command exists in the installed package (console script `scaler` -> scaler.cli, with the
sub-command registered).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import typer.main

from scaler.cli import app
from tests.builders import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cc", "clang", "git")


@dataclass
class Stage:
    """One FROM ... block: its base image, alias and instructions (keyword, argument)."""

    image: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        """The argument of the stage's last `keyword` instruction, or None."""
        found = [arg for kw, arg in self.instructions if kw == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ARG defaults substituted into FROM."""
    logical = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "ARG" and not stages:
            name, _, default = argument.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], argument)
            parts = image.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], alias))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, argument))
    return stages


def _stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _commands() -> dict[str, Any]:
    return dict(getattr(typer.main.get_command(app), "commands", {}))


def test_build_is_multi_stage_and_the_final_stage_copies_only_from_the_builder() -> None:
    """A builder stage makes wheels; the final stage installs them from the builder."""
    builder, final = _stages()
    assert builder.alias == "builder"
    assert any(kw == "RUN" and "pip wheel" in arg for kw, arg in builder.instructions)
    copies = [arg for kw, arg in final.instructions if kw == "COPY" and "--from" in arg]
    assert copies
    assert all("--from=builder" in arg for arg in copies)


def test_base_image_is_a_pinned_slim_python_311() -> None:
    """Both stages use python:3.11.<patch>-slim-<distro> (or a digest), never a moving tag."""
    for stage in _stages():
        assert re.fullmatch(
            r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?|python@sha256:[0-9a-f]{64}",
            stage.image,
        ), stage.image


def test_final_stage_runs_as_a_non_root_user() -> None:
    """The last USER of the final stage is a numeric non-zero uid (runAsNonRoot can check)."""
    user = _stages()[-1].last("USER")
    assert user is not None
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_final_stage_installs_no_build_tools_and_drops_pip() -> None:
    """No apt/compiler installs in the final stage; pip, setuptools and wheel are removed."""
    runs = " ".join(arg for kw, arg in _stages()[-1].instructions if kw == "RUN")
    assert "apt-get install" not in runs
    assert "apk add" not in runs
    for tool in BUILD_TOOLS:
        assert not re.search(rf"\b{re.escape(tool)}\b", runs), tool
    assert re.search(r"pip uninstall --yes setuptools wheel pip", runs)


def test_builder_compiles_the_decision_core_and_ships_only_that_wheel() -> None:
    """The builder builds the project with setup.py's SCALER_COMPILE_CORE=1 (mypyc; with a
    compiler installed there), after removing the pure-Python wheel of the project, with the
    mypy the test dependencies pin."""
    builder = _stages()[0]
    copied = " ".join(arg for kw, arg in builder.instructions if kw == "COPY")
    assert "setup.py" in copied.split()
    runs = " && ".join(arg for kw, arg in builder.instructions if kw == "RUN")
    assert re.search(r"apt-get install [^&]*\bgcc\b", runs)
    compiled = re.search(r"SCALER_COMPILE_CORE=1 pip wheel --no-build-isolation --no-deps", runs)
    removed = re.search(r"rm /wheels/scaler-\*\.whl", runs)
    assert compiled
    assert removed
    assert removed.start() < compiled.start()
    assert 'os.environ.get("SCALER_COMPILE_CORE") == "1"' in (ROOT / "setup.py").read_text()
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["test"]
    mypy = next(spec for spec in test_extra if spec.startswith("mypy"))
    assert f'"{mypy}"' in runs


def test_entrypoint_is_scaler_serve_and_exists_in_the_package() -> None:
    """ENTRYPOINT ["scaler", "serve"]: `scaler` is the package's console script (scaler.cli)
    and `serve` a registered sub-command; the activator's `scaler activator` too."""
    entrypoint = json.loads(_stages()[-1].last("ENTRYPOINT") or "null")
    assert entrypoint == ["scaler", "serve"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["scaler"] == "scaler.cli:main"
    installed = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert installed.get("scaler") == "scaler.cli:main", "pip install -e . to register it"
    commands = _commands()
    assert "activator" in commands
    assert "serve" in commands
    assert "--policies" in {opt for param in commands["serve"].params for opt in param.opts}


def test_parser_reads_stages_and_substitutes_args() -> None:
    """The parser used above handles ARG defaults, aliases and line continuations."""
    stages = parse_dockerfile(
        "ARG BASE=python:3.11.9-slim\nFROM ${BASE} AS builder\nRUN a \\\n  && b\n"
        "FROM $BASE\nUSER 10:10\n"
    )
    assert [(s.image, s.alias) for s in stages] == [
        ("python:3.11.9-slim", "builder"),
        ("python:3.11.9-slim", None),
    ]
    assert stages[0].instructions == [("RUN", "a    && b")]
    assert stages[1].last("USER") == "10:10"
