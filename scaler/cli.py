"""The `scaler` command: one sub-command per job, each a thin wrapper over its package."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from scaler import __version__
from scaler.activator.command import activator_command
from scaler.dashboards.command import dashboards_command
from scaler.live.command import serve_command
from scaler.modelfiles.command import fetch_model_command, preread_command
from scaler.policy import check_policies, fatal
from scaler.simulation.command import bench, simulate, tune
from scaler.simulation.record_command import calibrate, record
from scaler.simulation.scenario import is_scenario_file, validate_scenario

app = typer.Typer(
    name="scaler",
    help="Autoscaler for self-hosted LLM inference on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: it wraps the descriptions to the terminal and never cuts a flag's
    # name, where the rich panels cut long flags at 80-100 columns ("--allow-incomple…")
    # and print "<bool>" after flags that take no value.
    rich_markup_mode=None,
)


def package_version() -> str:
    """scaler's version from the installed package's metadata (the source tree's when it
    is run from a checkout that was never installed)."""
    try:
        return metadata.version("scaler")
    except metadata.PackageNotFoundError:
        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"scaler {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print scaler's version and exit.",
        ),
    ] = False,
) -> None:
    """Autoscaler for self-hosted LLM inference on Kubernetes."""


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Policy files or folders of them (*.yaml, *.yml), or scenario files "
            "(kind: Scenario)."
        ),
    ],
) -> None:
    """Validate policies and scenarios; print every error (file, line, field); exit 1 on any."""
    scenarios = [p for p in paths if is_scenario_file(p)]
    policy_paths = [p for p in paths if p not in scenarios]
    policies, errors = check_policies(policy_paths) if policy_paths else ([], [])
    checked = [validate_scenario(p) for p in scenarios]
    for warning in (e for e in errors if e.warning):
        typer.echo(str(warning), err=True)
    messages = [str(e) for e in fatal(errors)] + [e for _, found in checked for e in found]
    for message in messages:
        typer.echo(message, err=True)
    if messages:
        typer.echo(f"{len(messages)} error(s) found", err=True)
        raise typer.Exit(code=1)
    if policy_paths:
        names = ", ".join(p.model for p in policies)
        typer.echo(f"{len(policies)} valid polic{'y' if len(policies) == 1 else 'ies'}: {names}")
    if scenarios:
        names = ", ".join(name or "" for name, _ in checked)
        typer.echo(f"{len(scenarios)} valid scenario{'' if len(scenarios) == 1 else 's'}: {names}")


app.command("activator")(activator_command)
app.command("dashboards")(dashboards_command)
app.command("fetch-model")(fetch_model_command)
app.command("preread")(preread_command)
app.command("serve")(serve_command)
app.command()(simulate)
app.command()(tune)
app.command()(bench)
app.command()(record)
app.command()(calibrate)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
