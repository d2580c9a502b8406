"""fetch_model_file with the official huggingface_hub client against the Hub stand-in.

Each test runs the fetch in a thread (the client is synchronous; the stand-in lives on the
test's event loop) and then looks at two things: the models folder (what a model pod would
see) and the requests the stand-in recorded (what went over the wire).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

from scaler.modelfiles.fetch import (
    STAGING_DIR,
    FetchOutcome,
    FetchResult,
    PinMismatchError,
    fetch_model_file,
)
from scaler.modelfiles.pin import ModelFilePin
from tests.modelfiles.conftest import CONTENT, Hub, pin_for, sha256, tinyllama


async def _fetch(pin: ModelFilePin, models: Path, **kwargs: Any) -> FetchResult:
    return await asyncio.to_thread(fetch_model_file, pin, models, **kwargs)


def _visible(models: Path) -> list[str]:
    """What a model pod listing /models would see (the hidden staging folder aside)."""
    return sorted(p.name for p in models.iterdir() if p.name != STAGING_DIR)


def _parts(models: Path) -> list[Path]:
    staging = models / STAGING_DIR
    return sorted(staging.iterdir()) if staging.exists() else []


async def test_fresh_fetch_resolves_the_pinned_commit_and_installs_the_verified_file(
    hub: Hub, tmp_path: Path
) -> None:
    """One HEAD on the Hub's resolve path at the pinned commit, one GET of the storage URL it
    redirects to; the file lands under its own name with the pinned sha256, nothing else."""
    file = hub.standin.add(tinyllama())
    result = await _fetch(pin_for(file), tmp_path)
    assert result.outcome is FetchOutcome.DOWNLOADED
    assert (tmp_path / file.name).read_bytes() == CONTENT
    assert _visible(tmp_path) == [file.name]
    assert _parts(tmp_path) == []
    hub_calls = [(r.method, r.path) for r in hub.standin.requests if r.server == "hub"]
    assert hub_calls == [("HEAD", f"/{file.repo}/resolve/{file.commit}/{file.name}")]
    (download,) = hub.standin.downloads()
    assert download.path == f"/blobs/{file.sha256}"
    assert download.range is None


async def test_a_cut_connection_is_resumed_with_a_range_request(hub: Hub, tmp_path: Path) -> None:
    """The storage host drops the connection 15 MiB in; the client keeps the whole 10 MiB
    chunk it wrote and asks for the rest with Range: bytes=10485760-; the result is the
    whole, verified file."""
    file = hub.standin.add(tinyllama())
    hub.standin.cut_next_download_after(15 * 2**20)
    result = await _fetch(pin_for(file), tmp_path)
    assert result.outcome is FetchOutcome.DOWNLOADED
    kept = constants.DOWNLOAD_CHUNK_SIZE
    assert [d.range for d in hub.standin.downloads()] == [None, f"bytes={kept}-"]
    assert sha256((tmp_path / file.name).read_bytes()) == file.sha256


async def test_a_part_file_left_by_a_killed_run_is_resumed_not_restarted(
    hub: Hub, tmp_path: Path
) -> None:
    """A previous pod died mid-download: its part file is kept and only the rest is asked
    for, and the partial file was never visible under the model's name."""
    file = hub.standin.add(tinyllama())
    pin = pin_for(file)
    staging = tmp_path / STAGING_DIR
    staging.mkdir()
    part = staging / f"{file.name}.{file.sha256[:16]}.part"
    part.write_bytes(CONTENT[:777_777])
    older = staging / f"{file.name}.{'ab' * 8}.part"  # left by a run for an earlier pin
    older.write_bytes(b"not this file")
    assert _visible(tmp_path) == []
    result = await _fetch(pin, tmp_path)
    assert not older.exists()
    assert result.resumed_from == 777_777
    assert result.downloaded_bytes == len(CONTENT) - 777_777
    assert [d.range for d in hub.standin.downloads()] == ["bytes=777777-"]
    assert (tmp_path / file.name).read_bytes() == CONTENT


async def test_a_present_correct_file_is_kept_without_any_request(hub: Hub, tmp_path: Path) -> None:
    """The pinned file is in place: it is hashed locally and nothing is asked of the Hub."""
    file = hub.standin.add(tinyllama())
    (tmp_path / file.name).write_bytes(CONTENT)
    before = (tmp_path / file.name).stat().st_mtime_ns
    result = await _fetch(pin_for(file), tmp_path)
    assert result.outcome is FetchOutcome.PRESENT
    assert hub.standin.requests == []
    assert (tmp_path / file.name).stat().st_mtime_ns == before


async def test_a_corrupt_file_is_replaced_by_the_verified_one(hub: Hub, tmp_path: Path) -> None:
    """Same size, one flipped byte: detected by the sha256, downloaded again and renamed over
    it (a new inode: a pod that had the old one open keeps reading the old content)."""
    file = hub.standin.add(tinyllama())
    corrupt = bytearray(CONTENT)
    corrupt[len(corrupt) // 2] ^= 0xFF
    target = tmp_path / file.name
    target.write_bytes(bytes(corrupt))
    old_inode = target.stat().st_ino
    result = await _fetch(pin_for(file), tmp_path)
    assert result.outcome is FetchOutcome.REPLACED
    assert target.read_bytes() == CONTENT
    assert target.stat().st_ino != old_inode
    assert len(hub.standin.downloads()) == 1


async def test_a_pin_whose_sha256_the_hub_contradicts_is_refused_before_downloading(
    hub: Hub, tmp_path: Path
) -> None:
    """The Hub's X-Linked-Etag is not the pinned sha256: refused with both figures in the
    message, no byte downloaded, nothing installed."""
    file = hub.standin.add(tinyllama())
    wrong = sha256(b"some other file")
    with pytest.raises(PinMismatchError) as raised:
        await _fetch(pin_for(file, sha256=wrong), tmp_path)
    assert f"the Hub says sha256 {file.sha256}, the pin says {wrong}" in str(raised.value)
    assert hub.standin.downloads() == []
    assert _visible(tmp_path) == []


async def test_downloaded_bytes_that_do_not_hash_to_the_pin_are_discarded(
    hub: Hub, tmp_path: Path
) -> None:
    """The metadata agrees with the pin but the storage host sends other bytes of the same
    length: the fetch refuses after hashing, deletes the part file (a retry must not resume
    it) and installs nothing."""
    bad = os.urandom(len(CONTENT))
    file = hub.standin.add(tinyllama(served=bad))
    with pytest.raises(PinMismatchError) as raised:
        await _fetch(pin_for(file), tmp_path)
    assert f"with sha256 {sha256(bad)}, expected {file.sha256}" in str(raised.value)
    assert _visible(tmp_path) == []
    assert _parts(tmp_path) == []


async def test_a_bad_download_does_not_remove_the_file_in_place(hub: Hub, tmp_path: Path) -> None:
    """A wrong file in place plus a failing download: the model keeps what it had (nothing
    half-written takes its name)."""
    file = hub.standin.add(tinyllama(served=os.urandom(len(CONTENT))))
    target = tmp_path / file.name
    target.write_bytes(b"older weights")
    with pytest.raises(PinMismatchError):
        await _fetch(pin_for(file), tmp_path)
    assert target.read_bytes() == b"older weights"


async def test_a_revision_the_hub_does_not_have_is_refused(hub: Hub, tmp_path: Path) -> None:
    """RevisionNotFound from the Hub surfaces as the client's RevisionNotFoundError."""
    file = hub.standin.add(tinyllama())
    with pytest.raises(RevisionNotFoundError):
        await _fetch(pin_for(file, revision="1" * 39 + "2"), tmp_path)
    assert hub.standin.downloads() == []


async def test_the_token_goes_to_the_hub_and_not_to_the_storage_host(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gated repo: without HF_TOKEN the Hub answers 401 GatedRepo; with it the HEAD carries
    the bearer token and the download from the storage host (another origin) does not."""
    file = hub.standin.add(tinyllama(gated=True))
    with pytest.raises(GatedRepoError):
        await _fetch(pin_for(file), tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = await _fetch(pin_for(file), tmp_path)
    assert result.outcome is FetchOutcome.DOWNLOADED
    heads = [r for r in hub.standin.requests if r.server == "hub"]
    assert heads[-1].authorization == "Bearer hf_test_token"
    assert [d.authorization for d in hub.standin.downloads()] == [None]
