"""Reading a range of history from Prometheus (``/api/v1/query_range``), for record and calibrate.

The live source (`scaler.sources.prometheus`) asks instant questions every tick; ``scaler
record`` and ``scaler calibrate`` ask once for days of raw series. This client is synchronous
(a command-line run, nothing else to serve meanwhile), splits a long range into queries of at
most `MAX_POINTS` steps (Prometheus refuses more than 11,000 points per series), reports
progress after each, and turns every failure into a `HistoryError` whose message says what to
fix: the URL it could not reach, the HTTP status and Prometheus' own error text, the query.

Results are aligned on the step grid: `RangeSeries.values[k]` is the series at
``start + k·step`` (NaN where Prometheus had no sample within its lookback), which is what
`scaler.core.calibration.counter_increases` expects.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

MAX_POINTS: Final = 10_000
"""Steps per query: below Prometheus' limit of 11,000 points per series."""

Progress = Callable[[float, float], None]
"""Called with (steps done, steps in all) after each query of a range."""


class HistoryError(RuntimeError):
    """Prometheus could not be asked, or refused; the message names the URL and query."""


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and a value per step (NaN: no sample)."""

    labels: Mapping[str, str]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Grid:
    """The steps of a range: ``start + k·step`` for k in 0..count-1 (Unix seconds)."""

    start: float
    step: float
    count: int

    @property
    def end(self) -> float:
        """The last step's time."""
        return self.start + (self.count - 1) * self.step

    def time(self, k: int) -> float:
        """The time of step `k`."""
        return self.start + k * self.step


class PrometheusHistory:
    """A Prometheus HTTP API client for range queries (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        progress: Progress | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.progress = progress
        self.queries = 0

    def check(self) -> None:
        """Raise HistoryError unless Prometheus answers a trivial query."""
        self._get("/api/v1/query", {"query": "1"}, "1")

    def range(
        self, query: str, grid: Grid, *, done: float = 0.0, total: float = 0.0
    ) -> list[RangeSeries]:
        """Every series `query` gives over `grid`, each aligned on the grid.

        `done` and `total` place this range within a longer job for the progress callback
        (steps already read, steps in all); by default the range alone.
        """
        total = total or grid.count
        values: dict[tuple[tuple[str, str], ...], list[float]] = {}
        first = 0
        while first < grid.count:
            last = min(grid.count, first + MAX_POINTS) - 1
            params = {
                "query": query,
                "start": _stamp(grid.time(first)),
                "end": _stamp(grid.time(last)),
                "step": _stamp(grid.step),
            }
            data = self._get("/api/v1/query_range", params, query)
            result = data.get("result")
            if data.get("resultType") != "matrix" or not isinstance(result, list):
                raise HistoryError(f"{self.url}: unexpected answer to {query!r}: {str(data)[:200]}")
            for item in result:
                key = tuple(sorted(dict(item.get("metric", {})).items()))
                row = values.setdefault(key, [math.nan] * grid.count)
                for stamp, text in item.get("values", []):
                    k = round((float(stamp) - grid.start) / grid.step)
                    if 0 <= k < grid.count:
                        row[k] = _float(text)
            first = last + 1
            if self.progress is not None:
                self.progress(done + first, total)
        return [RangeSeries(dict(key), tuple(row)) for key, row in values.items()]

    def sample_times(self, selector: str, *, at: float, window: float) -> list[list[float]]:
        """The raw samples' timestamps of every series `selector` matches in the `window`
        seconds up to `at`: an instant query of the range vector, which Prometheus answers
        with the samples as scraped, not evaluated on a grid."""
        query = f"{selector}[{window:.0f}s]"
        data = self._get("/api/v1/query", {"query": query, "time": _stamp(at)}, query)
        result = data.get("result")
        if data.get("resultType") != "matrix" or not isinstance(result, list):
            raise HistoryError(f"{self.url}: unexpected answer to {query!r}: {str(data)[:200]}")
        return [[float(stamp) for stamp, _ in item.get("values", [])] for item in result]

    def _get(self, path: str, params: Mapping[str, str], query: str) -> dict[str, object]:
        self.queries += 1
        address = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as response:
                body = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read().decode("utf-8", errors="replace")
            finally:
                exc.close()
            try:
                message = str(json.loads(text).get("error", text))
            except ValueError:
                message = text[:300]
            raise HistoryError(
                f"{self.url}: HTTP {exc.code} for query {query!r}: {message}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HistoryError(
                f"cannot reach Prometheus at {self.url}: {reason} "
                "(check --prometheus-url; e.g. kubectl port-forward svc/prometheus 9090)"
            ) from None
        try:
            answer = json.loads(body)
        except ValueError:
            raise HistoryError(
                f"{self.url}: not a Prometheus API answer (is this the Prometheus URL?): "
                f"{body[:120]!r}"
            ) from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise HistoryError(f"{self.url}: query {query!r} failed: {error}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise HistoryError(f"{self.url}: unexpected answer to {query!r}: {str(answer)[:200]}")
        return data


_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def _float(text: object) -> float:
    value = str(text)
    if value in _SPECIAL:
        return _SPECIAL[value]
    try:
        return float(value)
    except ValueError:
        return math.nan


def _stamp(seconds: float) -> str:
    return f"{seconds:.3f}"
