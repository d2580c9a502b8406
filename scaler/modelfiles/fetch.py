"""Put one pinned model file into the models volume, verified, without ever exposing a partial one.

`fetch_model_file(pin, models_dir)` is what the per-model fetch Job runs
(``scaler fetch-model``). In order:

1. **Skip** when ``<models_dir>/<file>`` is already there with the pinned size and sha256:
   no request is sent at all (the Hub may be unreachable; the file is what was pinned).
2. **Ask the Hub** with the official client: ``get_hf_file_metadata`` sends
   ``HEAD /<repo>/resolve/<revision>/<file>`` (to ``HF_ENDPOINT``), follows redirects that stay
   on the Hub and stops at the one to the storage host; the answer carries the commit
   (``X-Repo-Commit``), the LFS sha256 (``X-Linked-Etag``) and size (``X-Linked-Size``). A
   commit, sha256 or size other than the pin's is refused *before* any byte is downloaded.
3. **Download aside**: into ``<models_dir>/.model-files/<file>.<sha256 prefix>.part`` on the
   same volume, with the official client's ``http_get``. A cut connection is resumed by
   ``http_get`` itself (a ``Range: bytes=<n>-`` request); a part file left by an earlier,
   killed run is resumed the same way. (``hf_hub_download`` would resume within one run but
   deletes its partial file when the process fails, see huggingface_hub PR #4228: a 26 GB
   Mixtral download interrupted by a node drain would start again from zero.) The
   ``Authorization`` header (``HF_TOKEN``, for gated repos) is sent to the Hub only, never to
   the storage host the Hub redirects to, as ``hf_hub_download`` does.
4. **Verify** the sha256 of the whole part file. A mismatch deletes it (resuming a wrong file
   would never converge) and is refused with both digests in the message.
5. **Rename into place** (``os.replace``: atomic on one filesystem, NFS included). A model
   pod sees either no file, the old file or the complete verified one. A present file with the
   wrong content stays until its verified replacement is renamed over it: a pin change then
   costs no downtime, and the old content was visible before this run anyway.

Network errors propagate (the Job retries, and the retry resumes); `PinMismatchError` means
retrying cannot help.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import http_get

# .utils re-exports build_hf_headers implicitly, which mypy --strict refuses: import its module.
from huggingface_hub.utils._headers import build_hf_headers

from scaler.modelfiles.pin import ModelFilePin

STAGING_DIR = ".model-files"
"""Hidden folder under the models volume holding partial downloads (never loaded by a model)."""

_HASH_CHUNK = 8 * 2**20

Report = Callable[[str], None]
"""Receives one human-readable progress line (the command prints them to the Job log)."""


class FetchOutcome(StrEnum):
    """What a fetch did."""

    PRESENT = "present"  # the right file was already in place: nothing downloaded
    DOWNLOADED = "downloaded"  # no file was there; the verified file is now
    REPLACED = "replaced"  # a file with the wrong content was there; replaced by the right one


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one fetch, where the file is, and how much came over the network."""

    outcome: FetchOutcome
    path: Path
    resumed_from: int = 0  # bytes of an earlier run's part file that were kept
    downloaded_bytes: int = 0


class FetchError(Exception):
    """The fetch cannot be done as configured (retrying does not help)."""


class PinMismatchError(FetchError):
    """The Hub's metadata or the downloaded bytes disagree with the pin."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, read in chunks (the file may be 26 GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_in_place(pin: ModelFilePin, path: Path) -> bool:
    """Whether `path` holds exactly the pinned file (size first: it is free to check)."""
    return (
        path.is_file() and path.stat().st_size == pin.size_bytes and file_sha256(path) == pin.sha256
    )


def fetch_model_file(
    pin: ModelFilePin,
    models_dir: Path,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    report: Report | None = None,
) -> FetchResult:
    """Make ``models_dir/<pin.file>`` the pinned file; see the module docstring for the steps.

    `endpoint` defaults to ``HF_ENDPOINT`` (read now, not at import) or the public Hub;
    `token` to what huggingface_hub finds (``HF_TOKEN``, then its token file).
    """
    say = report or (lambda _line: None)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    target = models_dir / pin.file
    present = target.exists()
    if present:
        say(f"{target}: present, checking its sha256")
        if is_in_place(pin, target):
            say(f"{target}: sha256 {pin.sha256} as pinned; nothing to download")
            return FetchResult(FetchOutcome.PRESENT, target)
        say(f"{target}: not the pinned file; fetching the pinned one to replace it")

    url = hf_hub_url(pin.repo, pin.file, revision=pin.revision, endpoint=endpoint)
    metadata = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    where = f"{pin.repo}@{pin.revision}/{pin.file}"
    if metadata.commit_hash != pin.revision:
        raise PinMismatchError(
            f"{where}: the Hub resolves the revision to commit {metadata.commit_hash}, "
            f"not {pin.revision}"
        )
    if metadata.etag != pin.sha256:
        raise PinMismatchError(
            f"{where}: the Hub says sha256 {metadata.etag}, the pin says {pin.sha256}; "
            "nothing downloaded (fix the pin, or the revision)"
        )
    if metadata.size is not None and metadata.size != pin.size_bytes:
        raise PinMismatchError(
            f"{where}: the Hub says {metadata.size} bytes, the pin says {pin.size_bytes}"
        )

    staging = models_dir / STAGING_DIR
    staging.mkdir(exist_ok=True)
    part = staging / f"{pin.file}.{pin.sha256[:16]}.part"
    for stale in staging.glob(f"{pin.file}.*.part"):
        if stale != part:  # a partial download for an earlier pin of this file: never resumable
            say(f"{stale}: partial download for another sha256; removed")
            stale.unlink()
    resumed = part.stat().st_size if part.exists() else 0
    if resumed > pin.size_bytes:  # not a prefix of this file: start over
        part.unlink()
        resumed = 0
    needed = pin.size_bytes - resumed
    free = shutil.disk_usage(staging).free
    if free < needed:
        raise FetchError(f"{staging}: {free} bytes free, {needed} more needed for {pin.file}")

    headers = build_hf_headers(token=token)
    if _origin(metadata.location) != _origin(url):
        # A signed storage URL: the Hub token must not leave the Hub.
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    say(f"{where}: downloading {needed} bytes" + (f", resuming at {resumed}" if resumed else ""))
    with part.open("ab") as handle:
        http_get(
            metadata.location,
            handle,
            resume_size=resumed,
            headers=headers,
            expected_size=pin.size_bytes,
            displayed_filename=pin.file,
        )
        handle.flush()
        os.fsync(handle.fileno())

    say(f"{part}: downloaded, checking its sha256")
    digest = file_sha256(part)
    if digest != pin.sha256:
        part.unlink()
        raise PinMismatchError(
            f"{where}: downloaded {pin.size_bytes} bytes with sha256 {digest}, expected "
            f"{pin.sha256}; discarded, nothing installed"
        )
    part.chmod(0o644)
    os.replace(part, target)
    _fsync_dir(models_dir)
    say(f"{target}: in place, sha256 {digest}")
    outcome = FetchOutcome.REPLACED if present else FetchOutcome.DOWNLOADED
    return FetchResult(outcome, target, resumed_from=resumed, downloaded_bytes=needed)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _fsync_dir(directory: Path) -> None:
    """Persist the rename (a crash right after must not bring back the old directory entry)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
