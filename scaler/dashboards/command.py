"""`scaler dashboards`: write (or check) the Grafana dashboards JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scaler.dashboards import DEFAULT_OUT, outdated, write


def dashboards_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder to write the dashboards JSON into (one file per dashboard).",
        ),
    ] = DEFAULT_OUT,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing; exit 1 if a file in --out is missing or out of date.",
        ),
    ] = False,
) -> None:
    """Write the Grafana dashboards (policy overview, model detail, adapter health) as JSON."""
    if check:
        stale = outdated(out)
        for path in stale:
            typer.echo(f"{path}: out of date; run `scaler dashboards --out {out}`", err=True)
        if stale:
            raise typer.Exit(code=1)
        typer.echo(f"dashboards in {out} are current")
        return
    for path in write(out):
        typer.echo(str(path))
