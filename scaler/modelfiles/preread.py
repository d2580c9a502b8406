"""Read a model's weights once, so that the node's page cache holds them for the next start.

llama-server maps the GGUF file (mmap): a start on a node whose page cache holds the file
reads it from memory (Mixtral's 26.4 GB in ~40 s in all), one on a node that never read it
reads the volume (~107 s, past Mixtral's 90 s SLO). After a node boots, or on a node the
model never ran on, its first wake-up is the slow one. The pre-read DaemonSet of the shipped
manifests runs `scaler preread` on the nodes Mixtral's wake-ups prefer, so that even the
first wake-up of the day loads from memory.

What it costs: one sequential read of the file per node boot, and page cache, which the
kernel gives back first under memory pressure (then the next start reads the volume, as
without the pre-read). The pages are charged to the reading container's memory cgroup
(cgroup v2), so its memory limit must exceed the file or the kernel drops them as it reads;
its memory request is what the command itself holds (nothing is reserved for the cache).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 16 * 1024 * 1024
"""One read's size: large enough that the syscalls cost nothing next to the I/O."""

REPORT_EVERY_BYTES = 4 * 1024**3
"""A progress line per this many bytes read (a 26 GB file takes minutes from a network volume)."""


class PrereadError(Exception):
    """A file that cannot be read (missing, not a regular file, an I/O error)."""


@dataclass(frozen=True, slots=True)
class PrereadResult:
    """One file read through: its size and how long the read took."""

    path: Path
    bytes_read: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        """The read's rate in MB/s (10^6 bytes; 0 for an instant read)."""
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0


def preread_file(
    path: Path,
    *,
    report: Callable[[str], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    report_every_bytes: int = REPORT_EVERY_BYTES,
    clock: Callable[[], float] = time.monotonic,
) -> PrereadResult:
    """Read `path` from start to end into one reused buffer (nothing kept but the page cache).

    PrereadError names the file when it is missing, not a regular file, or fails to read.
    `report` gets a line every `report_every_bytes`.
    """
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        raise PrereadError(f"{path}: {what}")
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    started = clock()
    done = 0
    next_report = report_every_bytes
    try:
        with path.open("rb", buffering=0) as file:
            # A hint for a larger readahead window on this sequential read (Linux).
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while True:
                count = file.readinto(view)
                if not count:
                    break
                done += count
                if report is not None and done >= next_report:
                    report(f"{path.name}: {done / 1e9:.1f} GB read")
                    next_report += report_every_bytes
    except OSError as exc:
        raise PrereadError(f"{path}: read failed after {done} bytes: {exc}") from exc
    return PrereadResult(path, done, clock() - started)
