"""`scaler fetch-model`: the fetch Job's entry point (one pinned model file into the volume)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scaler.modelfiles.pin import PinError, load_pin

EXIT_REFUSED = 3
"""Exit code for a fetch that retrying cannot fix (bad pin, mismatching figures, no access).

The Jobs' podFailurePolicy fails the Job at once on it instead of retrying."""


def fetch_model_command(
    pin: Annotated[
        Path,
        typer.Option("--pin", help="The model's pin file (kind: ModelFile).", show_default=False),
    ],
    models_dir: Annotated[
        Path,
        typer.Option("--models-dir", help="The models volume, writable (the fetch Job's mount)."),
    ] = Path("/models"),
) -> None:
    """Download a pinned model file from Hugging Face into the models volume, verified.

    Skips when the file is already there with the pinned sha256; resumes a partial download;
    never leaves a partial or unverified file under its final name. HF_TOKEN (optional) is
    sent for gated repos, HF_ENDPOINT selects another Hub. Exit 0 when the file is in place,
    3 when retrying cannot help, 1 on other (network) errors.
    """
    try:
        pinned = load_pin(pin)
    except PinError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(code=EXIT_REFUSED) from None
    try:
        # Imported here: huggingface_hub is the `fetch` extra; the other commands run without it.
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils.tqdm import disable_progress_bars

        from scaler.modelfiles.fetch import FetchError, fetch_model_file
    except ImportError as exc:
        typer.echo(f"scaler fetch-model needs the fetch extra (scaler[fetch]): {exc}", err=True)
        raise typer.Exit(code=EXIT_REFUSED) from None

    disable_progress_bars()  # a Job log gets our lines, not a redrawn terminal bar
    if not models_dir.is_dir():
        typer.echo(f"refused: {models_dir} is not a directory (mount the models volume)", err=True)
        raise typer.Exit(code=EXIT_REFUSED)
    try:
        result = fetch_model_file(pinned, models_dir, report=typer.echo)
    except (FetchError, GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(code=EXIT_REFUSED) from None
    except (HfHubHTTPError, OSError) as exc:
        typer.echo(f"failed (a retry resumes): {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{pinned.model}: {result.outcome.value} {result.path}")
