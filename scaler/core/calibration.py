"""Fitting model profiles to recorded metrics: the arithmetic of ``scaler calibrate`` (pure).

Inputs are plain per-step numbers (increases of counters, averages of gauges) that the
caller read from Prometheus; every fit returns its value with the number of samples it rests
on and a 95 % confidence interval, or None when there is nothing to fit (the caller then keeps
the prior). No I/O, no clock, no randomness, no numpy: the decision core's rules apply.

- `counter_increases`: a counter's per-step increases, with resets and gaps, as PromQL's
  ``increase()`` would count them but without its extrapolation (exact at step edges).
- `ratio`: a rate as a ratio of sums (tokens / seconds), with the ratio estimator's interval.
- `fit_decode`: per-stream decode speed and the slowdown per extra busy stream, by weighted
  least squares of the inter-token time on the busy streams:
  ``itl = (1 + slowdown·(busy - 1)) / decode`` is linear in busy, so the intercept at one
  stream is ``1 / decode`` and the slope over the intercept is the slowdown
  (`scaler.simulation.scenario.ModelProfile`'s service model).
- `fit_lognormal`: a log-normal's median and sigma from durations (cold starts), with the
  median's interval from the t-interval of the mean log.
- `fit_service`: the mean service time and the arrivals' dispersion, by feeding the steps to
  the decision core's own `ServiceEstimate`, so the figure offline is the figure the live
  loop would have calibrated to over the same series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scaler.core.sizing import ServiceEstimate

Z95 = 1.959963984540054
"""The standard normal's 97.5 % quantile: two-sided 95 % intervals."""

# Student's t 97.5 % quantiles for small samples (degrees of freedom 1..30); beyond: normal.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(freedom: int) -> float:
    """Student's t 97.5 % quantile with `freedom` degrees of freedom (pure)."""
    if freedom < 1:
        return math.inf
    return _T975[freedom - 1] if freedom <= len(_T975) else Z95


@dataclass(frozen=True, slots=True)
class Estimate:
    """A fitted figure: its value, a 95 % interval and the number of samples behind it."""

    value: float
    low: float
    high: float
    samples: int


@dataclass(frozen=True, slots=True)
class Increases:
    """A counter's increases per step (NaN: no sample at either edge) and what broke it."""

    steps: tuple[float, ...]
    resets: int  # times the value went down (a restart): the new value counts from zero
    gaps: tuple[tuple[int, int], ...]  # (first, last) edge indices without a sample, inside


def counter_increases(values: Sequence[float]) -> Increases:
    """Per-step increases of one counter series sampled at the step edges (NaN: absent).

    `values[k]` is the counter at edge k; step k (1-based edges k-1 → k) gets ``values[k] -
    values[k-1]``. A decrease is a reset (the process restarted): the step gets the new value.
    The first sample of a series that appears after the first edge (a pod that started in
    the range) counts from zero, as its counter did (a series that lived before the range
    but had no sample at its first edge would be counted whole: start a range where the
    series are scraped). A series absent between two
    samples is a gap: those steps get NaN, and the increase across the gap lands on the step
    where the series comes back (nothing is lost, only its timing) (pure).
    """
    steps: list[float] = []
    resets = 0
    gaps: list[tuple[int, int]] = []
    last: float | None = None
    seen_any = False
    gap_from: int | None = None
    for k, value in enumerate(values):
        if k == 0:
            if not math.isnan(value):
                last, seen_any = value, True
            continue
        if math.isnan(value):
            steps.append(math.nan)
            if seen_any and gap_from is None:
                gap_from = k
            continue
        if last is None:
            # First sample after the first edge: a series born in the range, from zero.
            steps.append(value)
        elif value < last:
            resets += 1
            steps.append(value)
        else:
            steps.append(value - last)
        if gap_from is not None:
            gaps.append((gap_from, k - 1))
            gap_from = None
        last, seen_any = value, True
    return Increases(tuple(steps), resets, tuple(gaps))


def ratio(
    numerators: Sequence[float], denominators: Sequence[float], *, samples: int | None = None
) -> Estimate | None:
    """ΣX / ΣY over the steps with Y > 0, with the ratio estimator's 95 % interval (pure).

    The variance is the usual linearisation, ``Σ(X - r·Y)² / ((n - 1)·n·Ȳ²)``; `samples`
    overrides the count reported (e.g. requests rather than steps). None without data.
    """
    pairs = [
        (x, y)
        for x, y in zip(numerators, denominators, strict=True)
        if y > 0 and math.isfinite(x) and math.isfinite(y)
    ]
    if not pairs:
        return None
    total_x = sum(x for x, _ in pairs)
    total_y = sum(y for _, y in pairs)
    if total_x <= 0:
        return None
    r = total_x / total_y
    n = len(pairs)
    count = samples if samples is not None else n
    if n < 2:
        return Estimate(r, 0.0, math.inf, count)
    mean_y = total_y / n
    variance = sum((x - r * y) ** 2 for x, y in pairs) / ((n - 1) * n * mean_y * mean_y)
    half = t975(n - 1) * math.sqrt(variance)
    return Estimate(r, max(0.0, r - half), r + half, count)


@dataclass(frozen=True, slots=True)
class DecodeFit:
    """Per-stream decode speed (tokens/s at one busy stream) and the slowdown per extra one."""

    decode: Estimate
    slowdown: Estimate | None  # None: the busy streams never varied enough to fit a slope
    alone: bool  # whether the speed rests on tokens generated alone (else: the regression)


MIN_ALONE_STEPS = 5
"""Fewest steps of tokens generated alone on a pod for the speed to rest on them only."""


def fit_decode(
    itl: Sequence[float],
    busy: Sequence[float],
    weights: Sequence[float],
    alone: Sequence[bool] | None = None,
) -> DecodeFit | None:
    """Fit ``itl = a + b·(busy - 1)`` by weighted least squares (pure).

    `itl` is the mean time per generated token in a step (seconds), `busy` the mean busy
    streams while those tokens were generated, `weights` the tokens; ``decode = 1/a`` and
    ``slowdown = b/a``.

    Busy streams read from gauges a scrape apart are a noisy stand-in for the streams each
    request decoded with, and noise in a regressor flattens the fitted slope and lifts the
    intercept (regression dilution): the speed would come out low. Where `alone` marks steps
    whose tokens were generated by one request with no other on its pod, the intercept is
    their token-weighted mean time per token instead, which no busy reading enters; the
    slope is then fitted through that intercept (still read against averaged busy streams:
    approximate). Intervals by the delta method (t quantiles, weights normalised to the number of
    steps). With too little spread in `busy` no slowdown is fitted. None without data.
    """
    flags = list(alone) if alone is not None else [False] * len(itl)
    rows = [
        (y, max(1.0, x) - 1.0, w, single)
        for y, x, w, single in zip(itl, busy, weights, flags, strict=True)
        if w > 0 and y > 0 and math.isfinite(y) and math.isfinite(x)
    ]
    if not rows:
        return None
    n = len(rows)
    total = sum(w for _, _, w, _ in rows)
    samples = round(total)
    mean_x = sum(w * x for _, x, w, _ in rows) / total
    mean_y = sum(w * y for y, _, w, _ in rows) / total
    sxx = sum(w * (x - mean_x) ** 2 for _, x, w, _ in rows)
    singles = [(y, w) for y, _, w, single in rows if single]
    if len(singles) >= MIN_ALONE_STEPS:
        weight = sum(w for _, w in singles)
        a = sum(w * y for y, w in singles) / weight
        spread_a = sum(w * (y - a) ** 2 for y, w in singles) / weight
        half = t975(len(singles) - 1) * math.sqrt(spread_a / len(singles)) / (a * a)
        decode = Estimate(1.0 / a, max(0.0, 1.0 / a - half), 1.0 / a + half, round(weight))
        sx2 = sum(w * x * x for _, x, w, _ in rows)
        if sx2 / total < 0.01 or n < 3:
            return DecodeFit(decode, None, True)
        b = sum(w * x * (y - a) for y, x, w, _ in rows) / sx2
        residual = sum(w * (y - a - b * x) ** 2 for y, x, w, _ in rows) / total * n / (n - 1)
        half_b = t975(n - 1) * math.sqrt(residual / (sx2 * n / total))
        slowdown = b / a
        return DecodeFit(
            decode,
            Estimate(max(0.0, slowdown), max(0.0, slowdown - half_b / a), slowdown + half_b / a, n),
            True,
        )
    if n < 3 or sxx / total < 0.01:
        # Nothing to regress on: the token-weighted mean, at the streams that were busy.
        decode_value = 1.0 / mean_y
        variance = sum(w * (y - mean_y) ** 2 for y, _, w, _ in rows) / total
        half = t975(max(1, n - 1)) * math.sqrt(variance / n) / (mean_y * mean_y)
        return DecodeFit(
            Estimate(decode_value, max(0.0, decode_value - half), decode_value + half, samples),
            None,
            False,
        )
    b = sum(w * (x - mean_x) * (y - mean_y) for y, x, w, _ in rows) / sxx
    a = mean_y - b * mean_x
    if a <= 0:
        return None
    residual = sum(w * (y - a - b * x) ** 2 for y, x, w, _ in rows) / total * n / (n - 2)
    # Weighted least squares with weights scaled to sum to n: Var(b) = s² / Σw'(x - x̄)².
    scale = n / total
    var_b = residual / (sxx * scale)
    var_a = residual * (1.0 / n + mean_x * mean_x / (sxx * scale))
    cov_ab = -mean_x * var_b
    t = t975(n - 2)
    decode_value = 1.0 / a
    half_decode = t * math.sqrt(var_a) / (a * a)
    slowdown = b / a
    # d(b/a) = db/a - b·da/a²
    var_s = var_b / (a * a) + b * b * var_a / a**4 - 2 * b * cov_ab / a**3
    half_slow = t * math.sqrt(max(0.0, var_s))
    return DecodeFit(
        Estimate(
            decode_value, max(0.0, decode_value - half_decode), decode_value + half_decode, samples
        ),
        Estimate(max(0.0, slowdown), max(0.0, slowdown - half_slow), slowdown + half_slow, n),
        False,
    )


@dataclass(frozen=True, slots=True)
class LogNormalFit:
    """A log-normal fitted to durations: the median with its interval, sigma, the longest."""

    median: Estimate
    sigma: float
    longest: float


def fit_lognormal(durations: Sequence[float]) -> LogNormalFit | None:
    """The log-normal of `durations` (seconds, > 0) by its maximum-likelihood mean and sigma
    of the logs; the median's 95 % interval is ``exp(μ ± t·s/√n)`` (pure). None if empty."""
    logs = [math.log(d) for d in durations if d > 0 and math.isfinite(d)]
    n = len(logs)
    if n == 0:
        return None
    mu = sum(logs) / n
    if n == 1:
        only = math.exp(mu)
        return LogNormalFit(Estimate(only, 0.0, math.inf, 1), 0.0, only)
    s = math.sqrt(sum((x - mu) ** 2 for x in logs) / (n - 1))
    half = t975(n - 1) * s / math.sqrt(n)
    median = Estimate(math.exp(mu), math.exp(mu - half), math.exp(mu + half), n)
    return LogNormalFit(median, s, math.exp(max(logs)))


@dataclass(frozen=True, slots=True)
class ServiceFit:
    """What the decision core's estimator makes of the recorded steps."""

    service_seconds: float  # Little's law over the range (busy slots / request rate)
    online_seconds: float  # the estimate the live loop would hold at the end (its horizon)
    arrival_scv: float  # index of dispersion of the step counts (1: Poisson)
    requests: float  # requests the range-wide estimate rests on


def fit_service(
    times: Sequence[float],
    rates: Sequence[float],
    busy: Sequence[float],
    *,
    prior_seconds: float,
    prior_requests: float,
    horizon: float,
    rate_horizon: float,
    dispersion_horizon: float,
) -> ServiceFit | None:
    """Feed per-step request rates and busy slots to `ServiceEstimate` twice (pure): once with
    the policy's calibration horizon (what the live loop holds at the end of the range), once
    with a horizon as long as the range (the range's own figure, prior still shrunk in).
    Steps with a NaN are skipped (no reading: the live loop would not observe either)."""
    rows = [
        (t, r, b)
        for t, r, b in zip(times, rates, busy, strict=True)
        if math.isfinite(r) and math.isfinite(b)
    ]
    if len(rows) < 2:
        return None
    step = (rows[-1][0] - rows[0][0]) / (len(rows) - 1)
    span = 10.0 * max(rows[-1][0] - rows[0][0], step)
    online = ServiceEstimate()
    whole = ServiceEstimate()
    for t, r, b in rows:
        online = online.observe(
            rate=r,
            busy=b,
            now=t,
            horizon=horizon,
            rate_horizon=rate_horizon,
            dispersion_horizon=dispersion_horizon,
            window_s=step,
        )
        whole = whole.observe(
            rate=r,
            busy=b,
            now=t,
            horizon=span,
            rate_horizon=span,
            dispersion_horizon=span,
            window_s=step,
        )
    if whole.rate <= 0:
        return None
    return ServiceFit(
        service_seconds=whole.service_seconds(prior_seconds, prior_requests, span),
        online_seconds=online.service_seconds(prior_seconds, prior_requests, horizon),
        arrival_scv=whole.arrival_scv(step, span),
        requests=whole.requests_seen(span),
    )
