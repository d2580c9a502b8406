"""Traffic traces: reading them from files, scaling them, and generating synthetic ones.

A `Trace` is four sorted, equally long numpy arrays (arrival time in seconds from the start,
model index, prompt tokens, output tokens) plus the model names the indices refer to. No
per-request Python object exists, so a million-request trace costs about 20 MB.

File formats (docs/formats.md, "Traces"):

- canonical CSV, header ``timestamp,model,prompt_tokens,output_tokens``; ``timestamp`` is
  seconds from the start (float);
- the Azure LLM inference trace, header ``TIMESTAMP,ContextTokens,GeneratedTokens``, with
  datetime strings; times become seconds from the first row;
- Mooncake JSONL, one object per line with ``timestamp`` (milliseconds), ``input_length`` and
  ``output_length``.

The last two carry no model: they are mapped onto one with ``FILE:MODEL``. A canonical CSV
may be mapped too (every row then goes to MODEL).

Bad input is an error naming the file and line (`TraceError`): bytes that are not UTF-8, a
malformed row, a model not in the scenario, a negative or non-integer token count, a negative
or non-finite timestamp, a token count above `MAX_TOKENS`, JSON nested too deeply or with
an integer Python will not convert, an empty trace. The file is read once, whole. Two cases
are repaired instead, with a warning: timestamps out of order are sorted (stably), because
merged logs of several front ends commonly interleave by a few milliseconds (the warning
names the first line out of order and how many rows moved); and canonical timestamps that
are absolute (Unix seconds: the first at or above `ABSOLUTE_AFTER_SECONDS`) are rebased to
start at 0, since replaying 54 years of empty virtual time before the first request would
take hours and gigabytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
"""Seconds, one per request."""
IntArray: TypeAlias = npt.NDArray[np.int64]
"""Model indices or token counts, one per request."""

MAX_TOKENS = 100_000_000
"""Largest prompt or output token count accepted (a million-token context is 1e6)."""
MAX_SPAN_SECONDS = 31 * 86400
"""Longest time a trace may span (a month): simulating costs time and memory per tick of
virtual time, so a longer one is refused rather than left to run for hours."""
ABSOLUTE_AFTER_SECONDS = 1e8
"""A canonical trace whose first request comes this late (over three years) is taken to
carry Unix timestamps and is rebased."""

CANONICAL_HEADER = ("timestamp", "model", "prompt_tokens", "output_tokens")
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class TraceError(ValueError):
    """A trace file that cannot be read as asked; the message names the file and line."""

    def __init__(self, file: Path | str, message: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(f"{where}: {message}")
        self.file = str(file)
        self.line = line


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival: time (s), model index into `models`, prompt and output tokens."""

    models: tuple[str, ...]
    time: FloatArray
    model: IntArray
    prompt: IntArray
    output: IntArray

    def __post_init__(self) -> None:
        n = len(self.time)
        if not (len(self.model) == len(self.prompt) == len(self.output) == n):
            raise ValueError("trace arrays differ in length")
        if n and np.any(np.diff(self.time) < 0):
            raise ValueError("trace times must be sorted")

    def __len__(self) -> int:
        return len(self.time)

    @property
    def duration(self) -> float:
        """Time of the last arrival (the trace starts at 0 by convention)."""
        return float(self.time[-1]) if len(self.time) else 0.0

    def count(self, model: str) -> int:
        """Requests for `model`."""
        if model not in self.models:
            return 0
        return int(np.count_nonzero(self.model == self.models.index(model)))

    def relabel(self, models: Sequence[str]) -> Trace:
        """The same requests with model indices into `models` (a superset of `self.models`)."""
        missing = [m for m in self.models if m not in models]
        if missing:
            raise ValueError(f"models {missing} are not in {list(models)}")
        remap = np.array([list(models).index(m) for m in self.models], dtype=np.int64)
        model = remap[self.model] if len(self.model) else self.model
        return Trace(tuple(models), self.time, model, self.prompt, self.output)

    def time_scaled(self, factor: float) -> Trace:
        """Stretch (factor > 1) or compress time; the rate changes by 1/factor."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"time scale must be a positive number, got {factor}")
        return Trace(self.models, self.time * factor, self.model, self.prompt, self.output)

    def rate_scaled(self, factor: float, *, seed: int) -> Trace:
        """Keep each request with probability `factor` (< 1), or replicate them (> 1).

        Thinning a Poisson process keeps it Poisson with the rate times `factor`. Above 1,
        each request is kept ``floor(factor)`` times plus once more with the fractional
        probability; copies arrive up to one mean inter-arrival gap later (uniformly), so
        bursts keep their shape without stacking copies at the same instant.
        """
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"rate scale must be a positive number, got {factor}")
        rng = np.random.default_rng(seed)
        n = len(self)
        whole = math.floor(factor)
        copies = np.full(n, whole, dtype=np.int64) + (rng.random(n) < factor - whole)
        index = np.repeat(np.arange(n), copies)
        time = self.time[index]
        if factor > 1 and n > 1:
            gap = self.duration / n
            first = np.ones(len(index), dtype=bool)
            first[1:] = index[1:] != index[:-1]
            time = time + np.where(first, 0.0, rng.random(len(index)) * gap)
        order = np.argsort(time, kind="stable")
        return Trace(
            self.models,
            time[order],
            self.model[index][order],
            self.prompt[index][order],
            self.output[index][order],
        )

    def shifted(self, offset: float) -> Trace:
        """The same requests `offset` seconds later."""
        return Trace(self.models, self.time + offset, self.model, self.prompt, self.output)

    def window(self, start: float, end: float) -> Trace:
        """Requests arriving in [start, end), re-based to start at 0."""
        keep = (self.time >= start) & (self.time < end)
        return Trace(
            self.models,
            self.time[keep] - start,
            self.model[keep],
            self.prompt[keep],
            self.output[keep],
        )


def empty_trace(models: Sequence[str] = ()) -> Trace:
    """A trace with no requests."""
    return Trace(
        tuple(models),
        np.zeros(0),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )


def merge(traces: Sequence[Trace]) -> Trace:
    """One trace holding every request of `traces`, sorted by time (stable)."""
    models: list[str] = []
    for trace in traces:
        models.extend(m for m in trace.models if m not in models)
    if not traces:
        return empty_trace()
    parts = [t.relabel(models) for t in traces]
    time = np.concatenate([p.time for p in parts])
    order = np.argsort(time, kind="stable")
    return Trace(
        tuple(models),
        time[order],
        np.concatenate([p.model for p in parts])[order],
        np.concatenate([p.prompt for p in parts])[order],
        np.concatenate([p.output for p in parts])[order],
    )


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceSource:
    """A trace file and, for single-model formats, the model its requests go to."""

    path: Path
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> TraceSource:
        """Read ``FILE`` or ``FILE:MODEL`` (a path that exists as given is never split)."""
        if Path(spec).exists() or ":" not in spec:
            return cls(Path(spec))
        path, model = spec.rsplit(":", 1)
        if not model:
            raise TraceError(spec, "empty model name after ':' (expected FILE:MODEL)")
        return cls(Path(path), model)


@dataclass(frozen=True)
class LoadedTrace:
    """A trace read from a file, with the repairs made on the way (one message each)."""

    trace: Trace
    warnings: tuple[str, ...]


def read_trace(source: TraceSource, known_models: Sequence[str]) -> LoadedTrace:
    """Read a trace file in any supported format; models must be in `known_models`.

    Raises TraceError naming the file and line on bad input (see the module docstring).
    """
    path = source.path
    if source.model is not None and source.model not in known_models:
        raise TraceError(
            path, f"unknown model {source.model!r}; expected one of: {', '.join(known_models)}"
        )
    text = _read_text(path)
    first = text.split("\n", 1)[0]
    if not first.strip():
        raise TraceError(path, "empty trace file", 1)
    if first.lstrip().startswith("{"):
        if source.model is None:
            raise TraceError(path, "a Mooncake JSONL trace has no model: use FILE:MODEL")
        columns = _read_mooncake(path, text)
    else:
        header = tuple(h.strip() for h in next(csv.reader([first])))
        if header == CANONICAL_HEADER:
            columns = _read_canonical(path, text, known_models, source.model)
        elif header == AZURE_HEADER:
            if source.model is None:
                raise TraceError(path, "an Azure trace has no model column: use FILE:MODEL")
            columns = _read_azure(path, text)
        else:
            raise TraceError(
                path,
                f"unrecognized header {','.join(header)!r}; expected "
                f"{','.join(CANONICAL_HEADER)!r} (canonical), {','.join(AZURE_HEADER)!r} "
                "(Azure) or JSON lines (Mooncake)",
                1,
            )
    return _to_trace(path, columns, known_models, source.model)


def _read_text(path: Path) -> str:
    """The whole file, read once; bytes that are not UTF-8 are an error naming their line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(path, f"cannot read trace: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(path, f"not UTF-8 text: {exc.reason}", line) from None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line, row) for each row after the header; a CSV syntax error names its line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader)
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise TraceError(path, f"malformed CSV: {exc}", reader.line_num) from None


@dataclass
class _Columns:
    """Raw parsed columns, before sorting; `lines` maps rows back to file lines."""

    time: list[float]
    model: list[str]
    prompt: list[int]
    output: list[int]
    lines: list[int]


def _int_field(path: Path, line: int, name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # also a string of more than 4,300 digits
        value = _integral_float(path, line, name, text)
    if value < 0:
        raise TraceError(path, f"{name}: negative token count {value}", line)
    if value > MAX_TOKENS:
        raise TraceError(path, f"{name}: token count above {MAX_TOKENS:,}: {text[:30]!r}", line)
    return value


def _integral_float(path: Path, line: int, name: str, text: str) -> int:
    """A token count written as a float ("12.0"); fractions and non-numbers are errors."""
    try:
        as_float = float(text)
    except ValueError:
        raise TraceError(path, f"{name}: not a number: {text!r}", line) from None
    if not (math.isfinite(as_float) and as_float.is_integer()):
        raise TraceError(path, f"{name}: token count must be an integer: {text[:30]!r}", line)
    if as_float > MAX_TOKENS:
        raise TraceError(path, f"{name}: token count above {MAX_TOKENS:,}: {text[:30]!r}", line)
    return int(as_float)


def _time_field(path: Path, line: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(path, f"{name}: not a number: {text!r}", line) from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(path, f"{name}: must be a finite number >= 0, got {text!r}", line)
    return value


def _read_canonical(path: Path, text: str, known: Sequence[str], mapped: str | None) -> _Columns:
    cols = _Columns([], [], [], [], [])
    known_set = set(known)
    for line, row in _csv_rows(path, text):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 4:
            raise TraceError(path, f"expected 4 fields, got {len(row)}: {row!r}", line)
        model = row[1].strip() if mapped is None else mapped
        if model not in known_set:
            raise TraceError(
                path, f"unknown model {model!r}; expected one of: {', '.join(known)}", line
            )
        cols.time.append(_time_field(path, line, "timestamp", row[0]))
        cols.model.append(model)
        cols.prompt.append(_int_field(path, line, "prompt_tokens", row[2]))
        cols.output.append(_int_field(path, line, "output_tokens", row[3]))
        cols.lines.append(line)
    return cols


def _read_azure(path: Path, text: str) -> _Columns:
    stamps: list[str] = []
    cols = _Columns([], [], [], [], [])
    for line, row in _csv_rows(path, text):
        if not row:
            continue
        if len(row) != 3:
            raise TraceError(path, f"expected 3 fields, got {len(row)}: {row!r}", line)
        stamps.append(row[0].strip())
        cols.prompt.append(_int_field(path, line, "ContextTokens", row[1]))
        cols.output.append(_int_field(path, line, "GeneratedTokens", row[2]))
        cols.lines.append(line)
    try:
        parsed = np.array(stamps, dtype="datetime64[ns]")
    except ValueError:
        # Find the culprit for the message (numpy only says the whole array failed).
        for stamp, line in zip(stamps, cols.lines, strict=True):
            try:
                np.datetime64(stamp, "ns")
            except ValueError:
                raise TraceError(path, f"TIMESTAMP: not a datetime: {stamp!r}", line) from None
        raise
    if np.isnat(parsed).any():
        line = cols.lines[int(np.argmax(np.isnat(parsed)))]
        raise TraceError(path, "TIMESTAMP: not a datetime", line)
    if len(parsed):
        seconds = (parsed - parsed.min()).astype(np.int64) / 1e9
        cols.time = seconds.tolist()
    return cols


def _read_mooncake(path: Path, text: str) -> _Columns:
    cols = _Columns([], [], [], [], [])
    for line, entry in enumerate(text.split("\n"), start=1):
        if not entry.strip():
            continue
        try:
            record = json.loads(entry)
        except json.JSONDecodeError as exc:
            raise TraceError(path, f"malformed JSON: {exc.msg}", line) from None
        except RecursionError:
            raise TraceError(path, "malformed JSON: nested too deeply", line) from None
        except ValueError as exc:  # an integer of more than 4,300 digits
            raise TraceError(path, f"malformed JSON: {exc}"[:200], line) from None
        if not isinstance(record, dict):
            raise TraceError(path, "expected a JSON object per line", line)
        for key in ("timestamp", "input_length", "output_length"):
            if key not in record:
                raise TraceError(path, f"missing field {key!r}", line)
        cols.time.append(_time_field(path, line, "timestamp", str(record["timestamp"])) / 1e3)
        cols.prompt.append(_int_field(path, line, "input_length", str(record["input_length"])))
        cols.output.append(_int_field(path, line, "output_length", str(record["output_length"])))
        cols.lines.append(line)
    if cols.time:
        start = min(cols.time)
        cols.time = [t - start for t in cols.time]
    return cols


def _to_trace(path: Path, cols: _Columns, known: Sequence[str], mapped: str | None) -> LoadedTrace:
    if not cols.time:
        raise TraceError(path, "the trace has no requests")
    models = tuple(known)
    index = {m: i for i, m in enumerate(models)}
    n = len(cols.time)
    time = np.asarray(cols.time, dtype=np.float64)
    if mapped is not None:
        model = np.full(n, index[mapped], dtype=np.int64)
    else:
        model = np.fromiter((index[m] for m in cols.model), dtype=np.int64, count=n)
    prompt = np.asarray(cols.prompt, dtype=np.int64)
    output = np.asarray(cols.output, dtype=np.int64)
    warnings: list[str] = []
    backwards = np.flatnonzero(np.diff(time) < 0)
    if len(backwards):
        order = np.argsort(time, kind="stable")
        moved = int(np.count_nonzero(order != np.arange(n)))
        warnings.append(
            f"{path}:{cols.lines[int(backwards[0]) + 1]}: timestamps out of order "
            f"({len(backwards)} step(s) back); sorted by time, {moved} row(s) moved"
        )
        time, model, prompt, output = time[order], model[order], prompt[order], output[order]
    if time[0] >= ABSOLUTE_AFTER_SECONDS:
        warnings.append(
            f"{path}: timestamps look absolute (the first is {time[0]:.0f} s, Unix time);"
            f" rebased so the first request is at 0 s"
        )
        time = time - time[0]
    if time[-1] - time[0] > MAX_SPAN_SECONDS:
        raise TraceError(
            path,
            f"the trace spans {(time[-1] - time[0]) / 86400:.1f} days, more than"
            f" {MAX_SPAN_SECONDS // 86400}: simulate a window of it, or time-scale it",
        )
    return LoadedTrace(Trace(models, time, model, prompt, output), tuple(warnings))


def write_canonical(trace: Trace, path: Path) -> None:
    """Write `trace` as a canonical CSV (times with millisecond precision)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CANONICAL_HEADER)
        names = trace.models
        for t, m, p, o in zip(
            trace.time.tolist(),
            trace.model.tolist(),
            trace.prompt.tolist(),
            trace.output.tolist(),
            strict=True,
        ):
            writer.writerow((f"{t:.3f}", names[m], p, o))


# --- synthetic traffic -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenSizes:
    """Log-normal prompt and output sizes with the given means (sigma: spread of the log)."""

    prompt_mean: float
    output_mean: float
    sigma: float = 0.8

    def draw(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """`n` (prompt, output) pairs, each at least 1 token."""

        def lognormal(mean: float) -> IntArray:
            mu = math.log(mean) - self.sigma**2 / 2  # so that the mean is `mean`
            values = rng.lognormal(mu, self.sigma, n)
            return np.maximum(1, np.rint(values)).astype(np.int64)

        return lognormal(self.prompt_mean), lognormal(self.output_mean)


def _single_model(
    model: str, time: FloatArray, sizes: TokenSizes, rng: np.random.Generator
) -> Trace:
    prompt, output = sizes.draw(rng, len(time))
    return Trace((model,), time, np.zeros(len(time), dtype=np.int64), prompt, output)


def poisson(model: str, *, rate: float, duration: float, sizes: TokenSizes, seed: int) -> Trace:
    """A homogeneous Poisson arrival process of `rate` requests/s over [0, duration)."""
    rng = np.random.default_rng(seed)
    count = rng.poisson(rate * duration)
    time = np.sort(rng.random(count) * duration)
    return _single_model(model, time, sizes, rng)


def diurnal(
    model: str,
    *,
    mean_rate: float,
    peak_to_trough: float,
    duration: float,
    sizes: TokenSizes,
    seed: int,
    period: float = 86_400.0,
    peak_at: float = 14 * 3600.0,
) -> Trace:
    """Poisson arrivals whose rate follows a day: a cosine peaking at `peak_at` (thinning)."""
    if peak_to_trough < 1:
        raise ValueError("peak_to_trough must be >= 1")
    rng = np.random.default_rng(seed)
    amplitude = (peak_to_trough - 1) / (peak_to_trough + 1)
    peak_rate = mean_rate * (1 + amplitude)
    count = rng.poisson(peak_rate * duration)
    candidates = np.sort(rng.random(count) * duration)
    rate = mean_rate * (1 + amplitude * np.cos(2 * math.pi * (candidates - peak_at) / period))
    keep = rng.random(count) < rate / peak_rate
    return _single_model(model, candidates[keep], sizes, rng)


def sessions(
    model: str,
    *,
    session_rate: float,
    requests_per_session: float,
    think_seconds: float,
    duration: float,
    sizes: TokenSizes,
    seed: int,
) -> Trace:
    """On/off traffic: sessions start as a Poisson process; within one, requests follow each
    other after exponential think times; between sessions the model is idle."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.random(rng.poisson(session_rate * duration)) * duration)
    lengths = 1 + rng.poisson(max(0.0, requests_per_session - 1), len(starts))
    times: list[FloatArray] = []
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        gaps = rng.exponential(think_seconds, length)
        gaps[0] = 0.0
        times.append(start + np.cumsum(gaps))
    time = np.sort(np.concatenate(times)) if times else np.zeros(0)
    time = time[time < duration]
    return _single_model(model, time, sizes, rng)
