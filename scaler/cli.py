"""The `scaler` command: one sub-command per job, each a thin wrapper over its package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scaler.activator.command import activator_command
from scaler.dashboards.command import dashboards_command
from scaler.policy import check_policies

app = typer.Typer(
    name="scaler",
    help="Autoscaler for self-hosted LLM inference on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Autoscaler for self-hosted LLM inference on Kubernetes."""


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Policy files or folders of them (*.yaml, *.yml).")
    ],
) -> None:
    """Validate policies; print every error with file, line and field; exit 1 on any."""
    policies, errors = check_policies(paths)
    for error in errors:
        typer.echo(str(error), err=True)
    if errors:
        typer.echo(f"{len(errors)} error(s) found", err=True)
        raise typer.Exit(code=1)
    names = ", ".join(p.model for p in policies)
    typer.echo(f"{len(policies)} valid polic{'y' if len(policies) == 1 else 'ies'}: {names}")


app.command("activator")(activator_command)
app.command("dashboards")(dashboards_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
