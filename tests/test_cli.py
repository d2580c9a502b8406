"""The `scaler` command itself: --version, and help that reads at 80-100 columns."""

from __future__ import annotations

from importlib import metadata

import pytest
import typer.main
from typer.testing import CliRunner

from scaler import __version__
from scaler.cli import app, package_version

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_version_prints_the_package_version() -> None:
    """`scaler --version` prints the installed package's version (else the source's)."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    try:
        expected = metadata.version("scaler")
    except metadata.PackageNotFoundError:
        expected = __version__
    assert result.stdout == f"scaler {expected}\n"
    assert package_version() == expected


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_every_flag_whole_and_no_bool_placeholder(
    command: str | None, width: int
) -> None:
    """Every option's flags (and their --no- forms) appear whole, nothing is cut with an
    ellipsis, no "<bool>" after a flag that takes no value, no line wider than the
    terminal."""
    args = [command, "--help"] if command else ["--help"]
    result = runner.invoke(app, args, env={"COLUMNS": str(width), "TERM": "xterm"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "…" not in text
    assert "<bool>" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    group = typer.main.get_command(app)
    cli = group.commands[command] if command else group  # type: ignore[attr-defined]
    for param in cli.params:
        for flag in [*param.opts, *param.secondary_opts]:
            if flag.startswith("-"):
                assert flag in text, f"{command} --help: {flag} missing or cut"
