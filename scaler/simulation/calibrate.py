"""``scaler calibrate``: a Scenario fitted to a Prometheus range (nodes, profiles, cold starts).

Each model's profile is fitted from its `ModelHistory` (``scaler.simulation.history``) with
the pure fits of `scaler.core.calibration`:

- ``prefillTokensPerSecond``: prompt tokens over prompt-processing seconds (llama.cpp
  ``prompt_tokens_total / prompt_seconds_total``; vLLM's per-request prompt tokens over its
  prefill-time histogram), a ratio of sums with its interval;
- ``decodeTokensPerSecond`` and ``decodeSlowdownPerStream``: per pod and step, the mean time
  per generated token against the busy streams (the pod's busy-slot gauge averaged, while
  busy, over one mean service time back, the time the tokens counted were generated in),
  by weighted least squares (`fit_decode`);
- ``slots``: the most busy slots a pod showed, exact when it also had a queue then (the
  pod was full), else no lower than the prior;
- ``memoryGiB``: the largest working set of any of the model's pods, rounded up to 0.1 GiB;
- ``coldStart``: a log-normal fitted to scaler's cold-start durations (`fit_lognormal`),
  ``maxSeconds`` the longest seen or the median's 3-sigma point, whichever is longer;
- as comments: the mean service time and the arrivals' dispersion as the decision core's
  `ServiceEstimate` makes them of the same steps (`fit_service`), next to the policy's
  ``sizing.serviceSeconds`` prior.

A figure resting on fewer than `MIN_SAMPLES` samples (requests, tokens, cold starts) keeps
the prior: the ``--prior`` scenario's profile of the model (by default the bundled homelab
scenario), else the policy's own figures (slots, memory, cold-start seconds). Every figure's
comment says which it is, with its sample count and 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from scaler.core import ModelPolicy
from scaler.core.calibration import (
    DecodeFit,
    Estimate,
    ServiceFit,
    fit_decode,
    fit_lognormal,
    fit_service,
    ratio,
)
from scaler.simulation.history import ModelHistory
from scaler.simulation.scenario import ModelProfile, Scenario

MIN_SAMPLES = 20
"""Fewest requests (or tokens' steps) behind a fitted speed; fewer keep the prior."""
MIN_COLD_STARTS = 5
"""Fewest cold starts behind a fitted cold-start distribution."""
GIB = 1024.0**3
DEFAULT_SERVICE_PRIOR = 60.0  # seconds; for a policy without a sizing section


class CalibrationError(ValueError):
    """A figure could be neither fitted nor taken from a prior; the message says which."""


@dataclass(frozen=True)
class Figure:
    """One value of the scenario and the comment that says where it came from."""

    value: float
    comment: str


@dataclass(frozen=True)
class ModelCalibration:
    """The fitted (or prior) profile figures of one model, with their comments."""

    model: str
    slots: Figure
    prefill: Figure
    decode: Figure
    slowdown: Figure
    memory: Figure
    cold_median: Figure
    cold_sigma: float
    cold_max: float
    service: ServiceFit | None
    service_prior: float


def _g(value: float) -> str:
    """A figure to three significant digits, as YAML."""
    if value == 0 or not math.isfinite(value):
        return repr(float(value)) if math.isfinite(value) else "null"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def _interval(estimate: Estimate, unit: str = "") -> str:
    high = "inf" if not math.isfinite(estimate.high) else _g(estimate.high)
    return f"95% CI {_g(estimate.low)}-{high}{unit}"


def calibrate_model(
    history: ModelHistory, prior: ModelProfile | None, *, min_samples: int = MIN_SAMPLES
) -> ModelCalibration:
    """Fit one model's profile from its history; CalibrationError if a figure has neither
    enough samples nor a prior."""
    policy = history.policy
    step = history.grid.step
    model = history.model
    requests = round(sum(v for v in history.requests if math.isfinite(v)))

    def need(field: str) -> ModelProfile:
        if prior is None:
            raise CalibrationError(
                f"{model}: too few samples to fit {field} and no prior profile for the model "
                "(pass --prior SCENARIO with a profile of it)"
            )
        return prior

    # Service time and dispersion: the decision core's estimator over the recorded steps.
    rule = policy.sizing
    service_prior = rule.service_seconds if rule is not None else DEFAULT_SERVICE_PRIOR
    busy = history.busy_total()
    service = fit_service(
        [history.grid.time(k + 1) for k in range(len(busy))],
        [n / step if math.isfinite(n) else math.nan for n in history.requests],
        [b if math.isfinite(b) else (0.0 if n == 0 else math.nan) for b, n in
         zip(busy, history.requests, strict=True)],
        prior_seconds=service_prior,
        prior_requests=rule.prior_requests if rule is not None else 20.0,
        horizon=rule.calibration_seconds if rule is not None else 900.0,
        rate_horizon=rule.rate_horizon_seconds if rule is not None else 600.0,
        dispersion_horizon=rule.dispersion_seconds if rule is not None else 1800.0,
    )  # fmt: skip
    service_s = service.service_seconds if service is not None else service_prior

    prefill_fit = ratio(history.prefill_tokens, history.prefill_seconds, samples=requests)
    if prefill_fit is not None and requests >= min_samples:
        prefill = Figure(
            prefill_fit.value,
            f"fitted: {_interval(prefill_fit)}, {prefill_fit.samples} requests",
        )
    else:
        profile = need("prefillTokensPerSecond")
        prefill = Figure(profile.prefill_tokens_per_second, f"prior ({requests} requests seen)")

    decode_fit = _decode(history, service_s)
    prior_slowdown = prior.decode_slowdown_per_stream if prior is not None else 0.0
    if decode_fit is not None and requests >= min_samples:
        d = decode_fit.decode
        how = "requests decoding alone" if decode_fit.alone else "regression at one stream"
        decode = Figure(d.value, f"fitted ({how}): {_interval(d)}, {d.samples} tokens")
        s = decode_fit.slowdown
        if s is not None:
            slowdown = Figure(
                s.value,
                f"fitted (approximate: busy streams are averages): {_interval(s)}, "
                f"{s.samples} pod-steps",
            )
        else:
            slowdown = Figure(prior_slowdown, "prior (busy streams never varied)")
    else:
        profile = need("decodeTokensPerSecond")
        decode = Figure(profile.decode_tokens_per_second, f"prior ({requests} requests seen)")
        slowdown = Figure(prior_slowdown, "prior")

    slots = _slots(history, policy, prior)
    memory = _memory(history, policy, prior)

    cold = fit_lognormal(history.cold_starts)
    if cold is not None and cold.median.samples >= MIN_COLD_STARTS:
        median = Figure(
            cold.median.value,
            f"fitted log-normal: median {_interval(cold.median, ' s')}, "
            f"sigma {_g(cold.sigma)}, {cold.median.samples} cold starts",
        )
        sigma = cold.sigma
        worst = max(cold.longest, cold.median.value * math.exp(3 * cold.sigma))
    else:
        seen = 0 if cold is None else cold.median.samples
        base = prior.cold_start if prior is not None else None
        if base is not None:
            median = Figure(base.median_seconds, f"prior ({seen} cold starts seen)")
            sigma, worst = base.sigma, base.worst_seconds
        else:
            median = Figure(
                policy.cold_start.seconds,
                f"policy coldStart.seconds ({seen} cold starts seen)",
            )
            sigma, worst = 0.0, policy.cold_start.seconds
    return ModelCalibration(
        model, slots, prefill, decode, slowdown, memory, median, sigma,
        max(worst, median.value), service, service_prior,
    )  # fmt: skip


def _decode(history: ModelHistory, service_s: float) -> DecodeFit | None:
    """Per pod and step: (time per token, busy streams, tokens, generated alone), then the
    weighted fit.

    The tokens a step counts were generated over about one service time before it (at
    completion, as llama.cpp and vLLM's histograms count them). Their busy streams are the
    pod's busy slots per decode call over that time (llama.cpp's
    ``n_busy_slots_per_decode``, vLLM's tokens per iteration); without those series, its
    busy-slot gauge averaged while busy (coarser: a gauge a scrape apart misses short
    requests). They were generated alone when every call in three such times had one busy
    slot.
    """
    step = history.grid.step
    back = max(1, math.ceil(service_s / step))
    itl: list[float] = []
    busy: list[float] = []
    weights: list[float] = []
    alone: list[bool] = []
    for pod, (seconds, tokens) in history.decode.items():
        batches = history.batches.get(pod)
        gauges = history.gauges.get(pod)
        for k, (s, n) in enumerate(zip(seconds, tokens, strict=True)):
            if n <= 0 or s <= 0:
                continue
            lo = max(0, k + 1 - back)
            if batches is not None:
                slots, calls = sum(batches[0][lo : k + 1]), sum(batches[1][lo : k + 1])
                if calls <= 0:
                    continue
                streams = slots / calls
                # Alone: one slot in every call over three service times back (a request
                # ending now may have started that long ago: long outputs, a wait).
                far = max(0, k + 1 - 3 * back)
                single = sum(batches[0][far : k + 1]) <= sum(batches[1][far : k + 1]) + 1e-6
            elif gauges is not None:
                edges = [v for v in gauges.busy[lo : k + 2] if math.isfinite(v)]
                window = [v for v in edges if v > 0]
                if not window:
                    continue
                streams = sum(window) / len(window)
                single = False  # a gauge cannot tell: the regression decides
            else:
                continue
            itl.append(s / n)
            busy.append(streams)
            weights.append(n)
            alone.append(single)
    return fit_decode(itl, busy, weights, alone)


def _slots(history: ModelHistory, policy: ModelPolicy, prior: ModelProfile | None) -> Figure:
    most = 0
    full = 0
    for gauges in history.gauges.values():
        peak = max((v for v in gauges.busy if math.isfinite(v)), default=0.0)
        most = max(most, round(peak))
    for gauges in history.gauges.values():
        full += sum(
            1
            for b, q in zip(gauges.busy, gauges.queue, strict=True)
            if math.isfinite(b) and math.isfinite(q) and round(b) == most and q > 0
        )
    fallback = (
        prior.slots
        if prior is not None
        else (policy.sizing.slots_per_replica if policy.sizing is not None else 1)
    )
    if full and most > 0:
        return Figure(most, f"fitted: {most} busy with a queue waiting ({full} samples)")
    return Figure(
        max(most, fallback),
        f"prior (most busy seen: {most}, never with a queue: a lower bound)",
    )


def _memory(history: ModelHistory, policy: ModelPolicy, prior: ModelProfile | None) -> Figure:
    peaks = [v for v in history.memory_peaks.values() if math.isfinite(v) and v > 0]
    if peaks:
        gib = math.ceil(max(peaks) / GIB * 10 - 1e-9) / 10
        return Figure(
            gib,
            f"fitted: largest working set of {len(peaks)} pod(s), "
            f"{_g(min(peaks) / GIB)}-{_g(max(peaks) / GIB)} GiB",
        )
    if prior is not None and prior.memory_gib is not None:
        return Figure(prior.memory_gib, "prior (no container_memory_working_set_bytes)")
    return Figure(policy.placement.memory_gib, "policy placement.memoryGiB (no working set seen)")


def render_scenario(
    *,
    name: str,
    description: str,
    policies: str,
    nodes: Mapping[str, float],
    nodes_comment: str,
    models: Sequence[ModelCalibration],
    trace: str | None,
    scrape_seconds: float,
    scrape_comment: str,
    hpa_sync_seconds: float,
    drain_seconds: float,
    header: Sequence[str],
) -> str:
    """The scenario YAML, every fitted figure with its comment; validated before returning."""
    lines = [f"# {line}" for line in header]
    lines += [
        "kind: Scenario",
        f"name: {name}",
        f"description: {yaml.safe_dump(description, width=1000).splitlines()[0]}",
        f"policies: {policies}",
        "",
        f"nodes:  # {nodes_comment}",
    ]
    lines += [f"  - {{name: {n}, allocatableGiB: {_g(gib)}}}" for n, gib in nodes.items()]
    lines += ["", "models:"]
    for m in models:
        service = m.service
        lines.append(f"  {m.model}:")
        if service is not None:
            lines.append(
                f"    # Little's law (the decision core's ServiceEstimate): mean service "
                f"{_g(service.service_seconds)} s over ~{service.requests:.0f} requests; the "
                f"live loop would hold {_g(service.online_seconds)} s at the end; arrivals' "
                f"dispersion {_g(service.arrival_scv)} (1 = Poisson); policy prior "
                f"sizing.serviceSeconds {_g(m.service_prior)}"
            )
        rows = [
            ("slots", f"{int(m.slots.value)}", m.slots.comment),
            ("prefillTokensPerSecond", _g(m.prefill.value), m.prefill.comment),
            ("decodeTokensPerSecond", _g(m.decode.value), m.decode.comment),
            ("decodeSlowdownPerStream", _g(m.slowdown.value), m.slowdown.comment),
            ("memoryGiB", _g(m.memory.value), m.memory.comment),
            (
                "coldStart",
                f"{{medianSeconds: {_g(m.cold_median.value)}, sigma: {_g(m.cold_sigma)}, "
                f"maxSeconds: {_g(m.cold_max)}}}",
                m.cold_median.comment,
            ),
        ]
        lines += [f"    {key}: {value}  # {comment}" for key, value, comment in rows]
    lines += ["", "traffic:"]
    if trace is not None:
        lines.append(f"  - {{kind: trace, file: {trace}}}  # scaler record")
    else:
        lines[-1] = "traffic: []  # add the recorded trace: {kind: trace, file: trace.csv}"
    lines += [
        "",
        "metrics:",
        f"  scrapeIntervalSeconds: {_g(scrape_seconds)}  # {scrape_comment}",
        f"  rateWindowSeconds: {_g(max(60.0, 4 * scrape_seconds))}",
        "",
        f"hpaSyncPeriodSeconds: {_g(hpa_sync_seconds)}  # --hpa-sync-period",
        "",
        f"drainSeconds: {_g(drain_seconds)}  # the replay ends where the recorded range did",
        "",
    ]
    text = "\n".join(lines)
    Scenario.model_validate(yaml.safe_load(text))  # a bug here must not write a bad file
    return text


def profile_priors(path: Path | None) -> dict[str, ModelProfile]:
    """The model profiles of the prior scenario at `path` (none when `path` is None)."""
    if path is None:
        return {}
    from scaler.simulation.scenario import check_scenario

    scenario, errors = check_scenario(path)
    if scenario is None:
        raise CalibrationError("\n".join(str(e) for e in errors))
    return dict(scenario.models)
