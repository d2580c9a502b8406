"""`scaler preread`: a real file read through, into this machine's page cache.

Residency is read with mincore(2) over a private mapping of the file, after dropping the
file's clean pages with posix_fadvise(DONTNEED): the same kernel page cache a node's next
llama-server start maps the weights from.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaler.cli import app
from scaler.modelfiles.preread import PrereadError, preread_file

SIZE = 24 * 2**20 + 4321  # a few chunks and a partial one


def _weights(tmp_path: Path, size: int = SIZE) -> Path:
    """A file of random bytes, written through to the disk (its pages clean)."""
    path = tmp_path / "model.gguf"
    with path.open("wb") as file:
        file.write(os.urandom(size))
        file.flush()
        os.fsync(file.fileno())
    return path


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _resident_share(path: Path) -> float:
    """The share of the file's pages in the page cache (mincore over a private mapping)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    with path.open("rb") as file:
        mapping = mmap.mmap(
            file.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        start = ctypes.c_char.from_buffer(mapping)
        try:
            code = libc.mincore(
                ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vector
            )
        finally:
            del start
            mapping.close()
    assert code == 0, os.strerror(ctypes.get_errno())
    return sum(v & 1 for v in vector) / pages


def test_the_read_leaves_the_whole_file_in_the_page_cache(tmp_path: Path) -> None:
    path = _weights(tmp_path)
    _drop_from_page_cache(path)
    if _resident_share(path) > 0.5:
        pytest.skip("this filesystem keeps clean pages after DONTNEED (tmpfs?)")
    result = preread_file(path, chunk_bytes=2**20)
    assert result.bytes_read == SIZE
    assert _resident_share(path) == pytest.approx(1.0)


def test_progress_is_reported_per_stretch_read(tmp_path: Path) -> None:
    lines: list[str] = []
    preread_file(
        _weights(tmp_path), report=lines.append, chunk_bytes=2**20, report_every_bytes=8 * 2**20
    )
    assert lines == [f"model.gguf: {n * 8 * 2**20 / 1e9:.1f} GB read" for n in (1, 2, 3)]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_file_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(PrereadError, match="does not exist" if kind == "missing" else "regular"):
        preread_file(path)
    result = CliRunner().invoke(app, ["preread", str(path)])
    assert result.exit_code == 1
    assert f"failed (a restart retries): {path}" in result.output


def test_the_command_reads_every_file_and_says_how_much(tmp_path: Path) -> None:
    first = _weights(tmp_path)
    second = tmp_path / "second.gguf"
    shutil.copyfile(first, second)
    result = CliRunner().invoke(app, ["preread", str(first), str(second)])
    assert result.exit_code == 0, result.output
    for path in (first, second):
        assert f"{path}: {SIZE / 1e9:.2f} GB read in" in result.output


def test_hold_stays_up_after_the_read_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """The DaemonSet's container: read, then hold (Running) until the kubelet stops it."""
    path = _weights(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler.cli", "preread", str(path), "--hold"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("holding until SIGTERM"):
                break
        assert any("GB read in" in line for line in lines), lines
        assert process.poll() is None  # still up after the read
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "SIGTERM: done" in rest
