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


def preread_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Model files to read, in order (paths on the models volume).",
            metavar="FILE",
            show_default=False,
        ),
    ],
    hold: Annotated[
        bool,
        typer.Option(
            "--hold",
            help="After reading, stay up until SIGTERM (a DaemonSet container: one read per pod).",
        ),
    ] = False,
) -> None:
    """Read model files once so this node's page cache holds them for the model's next start.

    The first start of a model on a node reads its weights from the volume (Mixtral: ~107 s
    against ~40 s from the page cache); run this on the nodes its pods prefer, at every node
    boot. Exit 0 when every file was read (with --hold: on SIGTERM or SIGINT afterwards),
    1 when one is missing or unreadable (not fetched yet: a restart retries).
    """
    # Imported here: the other commands do not need it at start-up.
    from scaler.modelfiles.preread import PrereadError, preread_file

    for path in files:
        try:
            result = preread_file(path, report=typer.echo)
        except PrereadError as exc:
            typer.echo(f"failed (a restart retries): {exc}", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(
            f"{path}: {result.bytes_read / 1e9:.2f} GB read in {result.seconds:.1f} s "
            f"({result.megabytes_per_second:.0f} MB/s): in this node's page cache now"
        )
    if hold:
        _wait_for_stop()


def _wait_for_stop() -> None:
    """Block until SIGTERM or SIGINT (then return: the command exits 0)."""
    import os
    import signal

    # Handlers and a wakeup fd, not sigwait(): numpy's BLAS threads run by now, and a signal
    # sent to the process goes to any thread that does not block it (sigwait's mask is the
    # main thread's alone: the kernel picked a BLAS thread now and then, and the default
    # action killed the process with -15). Python's C-level handler writes the signal's
    # number to the wakeup fd whichever thread takes it. A handler also makes the signal
    # reach PID 1 in a container, which ignores signals it leaves at the default.
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda signum, frame: None)
    typer.echo("holding until SIGTERM")
    received = os.read(read_end, 1)[0]
    typer.echo(f"{signal.Signals(received).name}: done")
