"""Shards of a deterministic work list, as a Kubernetes Indexed Job runs them.

A sharded command (``scaler tune --shard K/N``, ``scaler bench --shard K/N``) first builds its
whole work list, which depends only on its inputs and seed (never on the machine, the number
of workers or N), then runs the items i with ``i % N == K`` and writes one shard file into the
output folder. The merge (``--merge DIR``) reads every shard file of that kind, checks that the
set is whole and from one run, and hands the results back by item, so the command finishes
exactly as a single run would.

A shard file (JSON, named ``<kind>-shard-KKKK-of-NNNN.json``, written atomically: a pod killed
mid-write leaves the previous file or none, never half of one)::

    {"format": 1, "kind": "tune" | "bench", "shard": {"index": K, "count": N},
     "items": M, "inputs": {...}, "results": [{"item": i, ...}, ...], "wall_s": float}

``inputs`` describe the whole run (the work list, digests of the scenarios...) and are equal
in every shard of a run; ``results`` hold exactly the shard's items, in any order; ``wall_s``
is the shard's own wall time (results may carry theirs too). Floats are Python's JSON
(``Infinity`` for an endless wait): only scaler reads these files.

A merge reports, each naming the shard index and the file: a file that is not JSON or not a
shard of this kind (corrupt), a shard whose results are not its items (corrupt), shards of
another run (N or ``inputs`` differ), a shard index present twice (duplicate), and shard
indexes with no file (missing; merged anyway only when the caller allows an incomplete set).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from scaler.core import JsonValue

SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"
"""The variable a Kubernetes Indexed Job sets in each pod: the pod's index, 0 .. completions-1."""

FORMAT = 1

T = TypeVar("T")


class ShardError(Exception):
    """A shard spec that does not parse, or a shard set that cannot be merged."""


class MissingShardsError(ShardError):
    """The shard set is well formed but some shard indexes have no file."""

    def __init__(self, message: str, missing: Sequence[int]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`: the items i of a work list with i % count == index."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def items(self, total: int) -> range:
        """The items of a `total`-item work list this shard runs."""
        return range(self.index, total, self.count)

    def file_name(self, kind: str) -> str:
        """The shard file's name (zero-padded, so a listing sorts by index)."""
        return shard_file_name(kind, self.index, self.count)


def shard_file_name(kind: str, index: int, count: int) -> str:
    """``<kind>-shard-KKKK-of-NNNN.json``."""
    return f"{kind}-shard-{index:04d}-of-{count:04d}.json"


def parse_shard(spec: str, environ: Mapping[str, str] | None = None) -> Shard:
    """Parse ``K/N``, or ``/N`` with K from ``JOB_COMPLETION_INDEX`` (an Indexed Job's pod).

    When the variable is set and K is given too they must agree: a mismatch means the Job's
    manifest and its pods disagree on which shard is which.
    """
    env = os.environ if environ is None else environ
    k_text, slash, n_text = spec.partition("/")
    usage = (
        f"--shard {spec!r}: expected K/N (shard K of N, 0 <= K < N), or /N to take K from "
        f"{SHARD_INDEX_ENV}"
    )
    if not slash:
        raise ShardError(usage)
    try:
        count = int(n_text)
    except ValueError:
        raise ShardError(f"{usage}: N {n_text!r} is not an integer") from None
    if count < 1:
        raise ShardError(f"{usage}: N must be at least 1")
    from_env = env.get(SHARD_INDEX_ENV)
    env_index: int | None = None
    if from_env is not None:
        try:
            env_index = int(from_env)
        except ValueError:
            raise ShardError(f"{SHARD_INDEX_ENV}={from_env!r} is not an integer") from None
    if k_text.strip() == "":
        if env_index is None:
            raise ShardError(f"{usage}: K omitted but {SHARD_INDEX_ENV} is not set")
        index = env_index
    elif "$" in k_text:
        # Kubernetes leaves $(VAR) as it is when the container has no such variable.
        raise ShardError(
            f"{usage}: K {k_text!r} was not expanded; {SHARD_INDEX_ENV} is set only in the "
            "pods of a Job with completionMode: Indexed"
        )
    else:
        try:
            index = int(k_text)
        except ValueError:
            raise ShardError(f"{usage}: K {k_text!r} is not an integer") from None
        if env_index is not None and env_index != index:
            raise ShardError(
                f"--shard {spec} but {SHARD_INDEX_ENV}={env_index}: this pod is shard "
                f"{env_index}; pass --shard $({SHARD_INDEX_ENV})/{count}"
            )
    if not 0 <= index < count:
        raise ShardError(f"{usage}: K={index} is outside 0..{count - 1}")
    return Shard(index, count)


def write_shard(
    directory: Path,
    kind: str,
    shard: Shard,
    *,
    items: int,
    inputs: Mapping[str, JsonValue],
    results: Sequence[Mapping[str, JsonValue]],
    wall_s: float,
) -> Path:
    """Write one shard file into `directory` (created if needed), atomically; its path."""
    document: dict[str, JsonValue] = {
        "format": FORMAT,
        "kind": kind,
        "shard": {"index": shard.index, "count": shard.count},
        "items": items,
        "inputs": dict(inputs),
        "results": [dict(r) for r in results],
        "wall_s": round(wall_s, 3),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / shard.file_name(kind)
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(json.dumps(document) + "\n")
    os.replace(handle.name, path)
    return path


@dataclass(frozen=True)
class ShardFile:
    """One shard file as read (its results parsed by the kind's parser)."""

    path: Path
    shard: Shard
    items: int
    inputs: dict[str, JsonValue]
    results: dict[int, Any]
    wall_s: float


@dataclass(frozen=True)
class ShardSet(Generic[T]):
    """The checked shard files of one run: the shared inputs and every result by item."""

    directory: Path
    count: int
    items: int
    inputs: dict[str, JsonValue]
    results: dict[int, T]  # item -> result, in item order
    files: tuple[ShardFile, ...]  # by shard index
    missing: tuple[int, ...]  # shard indexes without a file (only with allow_incomplete)

    @property
    def wall_s(self) -> float:
        """The slowest shard's wall time: the Job's wall time with one pod per shard."""
        return max((f.wall_s for f in self.files), default=0.0)


def read_shards(
    directory: Path,
    kind: str,
    parse_result: Callable[[Mapping[str, Any]], T],
    *,
    allow_incomplete: bool = False,
) -> ShardSet[T]:
    """Read and check every ``<kind>-shard-*.json`` of `directory` (module docstring).

    `parse_result` turns one result object into the kind's value; a KeyError, TypeError or
    ValueError it raises marks the file corrupt. Raises ShardError listing every problem
    (MissingShardsError when missing shards are the only one and not allowed).
    """
    if not directory.is_dir():
        raise ShardError(f"{directory}: shard folder not found")
    paths = sorted(directory.glob(f"{kind}-shard-*.json"))
    if not paths:
        raise ShardError(
            f"{directory}: no {kind} shard files ({kind}-shard-*.json); "
            f"run `scaler {kind} --shard K/N --out {directory}` first"
        )
    errors: list[str] = []
    files: list[ShardFile] = []
    for path in paths:
        try:
            files.append(_read_file(path, kind, parse_result))
        except ShardError as exc:
            errors.append(str(exc))
    if not files:
        raise ShardError("\n".join(errors))
    first = files[0]
    for other in files[1:]:
        if other.shard.count != first.shard.count or other.items != first.items:
            errors.append(
                f"{other.path}: shard {other.shard} of a {other.items}-item run, but "
                f"{first.path.name} is shard {first.shard} of a {first.items}-item run: "
                f"shards of different runs in {directory}"
            )
        elif other.inputs != first.inputs:
            keys = sorted(
                k
                for k in set(first.inputs) | set(other.inputs)
                if first.inputs.get(k) != other.inputs.get(k)
            )
            errors.append(
                f"{other.path}: shard {other.shard} is from another run than "
                f"{first.path.name} ({', '.join(keys)} differ)"
            )
    by_index: dict[int, list[ShardFile]] = {}
    for file in files:
        by_index.setdefault(file.shard.index, []).append(file)
    for index, same in sorted(by_index.items()):
        if len(same) > 1:
            names = ", ".join(str(f.path) for f in same)
            errors.append(
                f"shard {index} of {first.shard.count} appears {len(same)} times (duplicate): "
                f"{names}"
            )
    if errors:
        raise ShardError("\n".join(errors))
    count = first.shard.count
    missing = [k for k in range(count) if k not in by_index]
    if missing and not allow_incomplete:
        expected = ", ".join(shard_file_name(kind, k, count) for k in missing)
        raise MissingShardsError(
            f"{directory}: {len(missing)} of {count} shards missing: "
            f"{', '.join(map(str, missing))} (no {expected})",
            missing,
        )
    ordered = sorted(files, key=lambda f: f.shard.index)
    pairs = [(item, value) for f in ordered for item, value in f.results.items()]
    results = dict(sorted(pairs, key=lambda pair: pair[0]))
    return ShardSet(
        directory, count, first.items, first.inputs, results, tuple(ordered), tuple(missing)
    )


_NAME = re.compile(r"-shard-(\d+)-of-(\d+)\.json$")


def _read_file(path: Path, kind: str, parse_result: Callable[[Mapping[str, Any]], T]) -> ShardFile:
    named = _NAME.search(path.name)
    label = f"shard {int(named[1])}" if named else "shard ?"
    where = f"{path} ({label}, by its name)"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"{where}: cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ShardError(
            f"{where}: corrupt, not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "run that shard again"
        ) from None
    try:
        if not isinstance(document, dict):
            raise TypeError("not a JSON object")
        if document.get("kind") != kind or document.get("format") != FORMAT:
            raise ValueError(
                f"not a format-{FORMAT} {kind} shard (kind {document.get('kind')!r}, "
                f"format {document.get('format')!r})"
            )
        shard = Shard(_int(document["shard"]["index"]), _int(document["shard"]["count"]))
        if not 0 <= shard.index < shard.count:
            raise ValueError(f"shard index {shard.index} outside 0..{shard.count - 1}")
        where = f"{path} (shard {shard})"
        items = _int(document["items"])
        inputs = document["inputs"]
        if not isinstance(inputs, dict):
            raise TypeError("inputs: not a JSON object")
        raw = document["results"]
        if not isinstance(raw, list):
            raise TypeError("results: not a JSON list")
        results: dict[int, T] = {}
        for record in raw:
            item = _int(record["item"])
            if item in results:
                raise ValueError(f"item {item} appears twice")
            results[item] = parse_result(record)
        expected = set(shard.items(items))
        if set(results) != expected:
            absent = sorted(expected - set(results))
            foreign = sorted(set(results) - expected)
            raise ValueError(
                f"results are not this shard's items (missing {absent[:10]}, "
                f"not its own {foreign[:10]})"
            )
        wall_s = float(document["wall_s"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ShardError(f"{where}: corrupt shard file: {detail}; run that shard again") from None
    return ShardFile(path, shard, items, inputs, results, wall_s)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value
