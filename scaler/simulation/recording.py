"""``scaler record``: rebuild a canonical trace from a Prometheus range.

Counters say how many requests each model started (vLLM: got a first token; llama.cpp: the
activator let through) in each step, and how many tokens went through, not when each
request arrived nor how big each was.
The trace is rebuilt per step:

- arrivals: the step's request count, spread uniformly inside the step by a seeded draw,
  put back by their time to first token where the count is taken then (vLLM: one latency
  per request from the histogram's buckets, scaled to the step's exact mean) and by the
  activator's mean hold for the requests it held (llama.cpp at zero);
  requests the activator gave up on count too (they were traffic), at their step;
- sizes: token counters move when a prompt is processed or a request ends, up to a service
  time after its request was counted, so each step's requests get the tokens per request
  of a window of steps around it (±`TOKEN_WINDOW_SECONDS`), scaled so the range's totals
  stay exact, shared out as integers (the remainder one token each to requests drawn by
  the seed).

What could not be seen is reported (`RecordedTrace.notes`): gaps in series, counter resets,
steps with tokens but no request near them, requests the activator gave up on, and models
with no series at all (naming the metric and matcher looked for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scaler.simulation.history import ModelHistory
from scaler.simulation.traces import Trace, empty_trace, merge

TOKEN_WINDOW_SECONDS = 300.0
"""Half-width of the window over which llama.cpp's token counters are matched to requests."""


@dataclass(frozen=True)
class RecordedTrace:
    """The rebuilt trace and what was noticed on the way (one line each)."""

    trace: Trace
    notes: tuple[str, ...]
    requests: dict[str, int]


def rebuild(histories: Sequence[ModelHistory], *, seed: int = 0) -> RecordedTrace:
    """The canonical trace of `histories` (time 0 = the grid's first edge)."""
    rng = np.random.default_rng(seed)
    parts: list[Trace] = []
    notes: list[str] = []
    counts: dict[str, int] = {}
    for history in histories:
        notes.extend(history.notes)
        if not history.seen:
            looked = ", ".join(history.missing) or "its request counter"
            notes.append(f"{history.model}: no requests in the range (looked for {looked})")
            counts[history.model] = 0
            continue
        trace, extra = _model_trace(history, rng)
        notes.extend(extra)
        counts[history.model] = len(trace)
        parts.append(trace)
    names = tuple(h.model for h in histories)
    trace = merge(parts).relabel(names) if parts else empty_trace(names)
    return RecordedTrace(trace, tuple(notes), counts)


def _model_trace(history: ModelHistory, rng: np.random.Generator) -> tuple[Trace, list[str]]:
    grid = history.grid
    step = grid.step
    notes: list[str] = []
    served = np.rint(np.asarray(history.requests)).astype(np.int64)
    gave_up = np.rint(np.asarray(history.timeouts)).astype(np.int64)
    held = np.minimum(np.rint(np.asarray(history.held)).astype(np.int64), served)
    prompt = np.asarray(history.prompt_tokens)
    output = np.asarray(history.output_tokens)
    prompt, output, unmatched = _windowed(served + gave_up, prompt, output, step)
    prompt, output = _whole(prompt), _whole(output)
    if unmatched:
        notes.append(
            f"{history.model}: {unmatched} step(s) with tokens but no request within "
            f"{TOKEN_WINDOW_SECONDS:.0f} s; their tokens went to the nearest requests"
        )
    if gave_up.sum():
        notes.append(
            f"{history.model}: {int(gave_up.sum())} request(s) given up while held by the "
            "activator, recorded at the step they were given up"
        )
    times: list[np.ndarray] = []
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    latency_n = np.asarray(history.latency_count)
    held_n = np.asarray(history.held)
    held_s = np.asarray(history.held_wait)
    for k in np.flatnonzero(served + gave_up).tolist():
        n = int(served[k] + gave_up[k])
        begin = k * step  # relative to the first edge
        back = np.zeros(n)
        if latency_n[k] > 0:
            back[: min(n, round(latency_n[k]))] = _latencies(history, k, rng)[:n]
        if held[k] > 0 and held_n[k] > 0:
            back[: held[k]] = held_s[k] / held_n[k]
        arrivals = np.maximum(0.0, begin + rng.random(n) * step - back)
        times.append(arrivals)
        prompts.append(_split(prompt[k], n, rng))
        outputs.append(_split(output[k], n, rng))
    time = np.concatenate(times)
    order = np.argsort(time, kind="stable")
    return (
        Trace(
            (history.model,),
            time[order],
            np.zeros(len(time), dtype=np.int64),
            np.concatenate(prompts)[order],
            np.concatenate(outputs)[order],
        ),
        notes,
    )


def _latencies(history: ModelHistory, k: int, rng: np.random.Generator) -> np.ndarray:
    """One latency per request finished in step `k`: each at the middle of its histogram
    bucket (the lower bound of the last, open one), in random order, scaled so their mean is
    the step's exact mean (``_sum / _count``)."""
    count = round(history.latency_count[k])
    mean = history.latency_sum[k] / history.latency_count[k]
    values: list[float] = []
    below, previous = 0.0, 0.0
    for le, increases in history.latency_buckets.items():
        inside = round(increases[k] - below)
        middle = previous if math.isinf(le) else (previous + le) / 2
        values.extend([middle] * max(0, inside))
        below, previous = increases[k], (previous if math.isinf(le) else le)
    if len(values) != count or sum(values) <= 0:
        return np.full(count, mean)  # no usable buckets: every request at the mean
    latencies = np.asarray(values) * (mean / (sum(values) / count))
    return rng.permutation(latencies)


def _whole(tokens: np.ndarray) -> np.ndarray:
    """Per-step token shares as integers whose running total stays the rounded running total
    of the shares (so rounding never adds up over thousands of steps)."""
    running = np.rint(np.cumsum(tokens))
    return np.diff(np.concatenate(([0.0], running)))


def _split(tokens: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """`tokens` (rounded) shared out over `n` requests: equal parts, the remainder one token
    each to requests drawn at random."""
    total = max(0, round(float(tokens)))
    base, extra = divmod(total, n)
    sizes = np.full(n, base, dtype=np.int64)
    if extra:
        sizes[rng.choice(n, size=extra, replace=False)] += 1
    return sizes


def _windowed(
    requests: np.ndarray, prompt: np.ndarray, output: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per step, its requests times the tokens per request of the window around it, scaled so
    the totals are the counters' (and the steps with tokens but no request in their window)."""
    half = max(1, math.ceil(TOKEN_WINDOW_SECONDS / step))
    kernel = np.ones(2 * half + 1)
    near_requests = np.convolve(requests.astype(np.float64), kernel, mode="same")
    unmatched = int(np.count_nonzero((near_requests == 0) & ((prompt > 0) | (output > 0))))
    shares = []
    for tokens in (prompt, output):
        near_tokens = np.convolve(tokens, kernel, mode="same")
        per_request = np.where(near_requests > 0, near_tokens / np.maximum(near_requests, 1), 0)
        share = requests * per_request
        total, placed = float(tokens.sum()), float(share.sum())
        shares.append(share * (total / placed) if placed > 0 else share)
    return shares[0], shares[1], unmatched
