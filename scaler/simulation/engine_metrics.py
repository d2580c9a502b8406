"""The series a real model server pod would have exposed for the requests it served.

Part of the simulator's OpenMetrics export (`scaler.simulation.openmetrics`): with them a
simulated run backfilled into Prometheus looks, to ``scaler record`` and ``scaler calibrate``,
like a cluster's history, which is how those are tested against a known ground truth.

One series per pod (label ``pod``, ``<deployment>-sim-<id>``), sampled at every scrape from
the pod's Ready time to its end, with the labels the pod's scrape target would attach: the
policy's equality matchers (``namespace="cortex"``, ``model="<name>"``). Names and types are
upstream's, and so is *when* each counter moves:

- llama.cpp ``llama-server --metrics`` (ggml-org/llama.cpp ``tools/server``): the prompt
  counters move when a request's prompt is processed, the generation counters when the
  request finishes (the server folds a slot's totals in on release);
  ``llamacpp:requests_processing`` is the busy slots, ``llamacpp:requests_deferred`` the
  model's queue shared out over its Ready pods, ``llamacpp:n_busy_slots_per_decode`` the
  average busy slots per decode call since the pod started.
- vLLM (``vllm/v1/metrics/loggers.py``): ``vllm:prompt_tokens_total`` at the end of the
  prefill, ``vllm:generation_tokens_total`` token by token (linearly over each decode),
  ``vllm:request_success_total{finished_reason="stop"}`` and the per-request histograms at
  completion but ``vllm:time_to_first_token_seconds``, observed at the first token; the
  gauges as for llama.cpp. ``vllm:time_per_output_token_seconds`` observes
  each generated token's time (its `_sum` over a request is the request's decode time). The
  labels ``model_name`` and ``engine`` are vLLM's own.

Also per pod: cAdvisor's ``container_memory_working_set_bytes{namespace, pod, container}``
(the profile's memory, from placement to the pod's end) and, per node,
kube-state-metrics' ``kube_node_status_allocatable{node, resource="memory", unit="byte"}``.

The simulator has no batch steps: llama.cpp's ``llamacpp:n_decode_total`` and vLLM's
``vllm:iteration_tokens_total`` count one decode call per token time of one stream while a
pod is busy, each call with every busy slot in it, so busy slots per call are the busy slots'
time average while busy (which is what calibrate reads them for).

Left out: llama.cpp's ``n_tokens_max``, the KV-cache gauges, vLLM's prefix cache and
preemption counters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from scaler.core import Engine, ModelPolicy
from scaler.simulation.engine import SERVED, PodRecord, SimulationResult
from scaler.sources.templates import parse_matcher

GIB = 1024.0**3

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's ``time_to_first_token_seconds`` buckets."""
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
"""vLLM's ``time_per_output_token_seconds`` buckets."""
LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's request latency buckets (end to end, prefill)."""
ITERATION_BUCKETS = (
    1.0,
    8.0,
    16.0,
    32.0,
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
    2048.0,
    4096.0,
    8192.0,
)
"""vLLM's ``iteration_tokens_total`` buckets (up to the batch token budget)."""
TOKEN_BUCKETS = tuple(float(m * 10**e) for e in range(5) for m in (1, 2, 5))
"""vLLM's 1-2-5 token-count buckets (up to max_model_len; here 50,000)."""

_HELP = {
    # llama.cpp's as llama-server b11434 prints them (tests/integration/test_llamacpp_metrics.py)
    "llamacpp:prompt_tokens_total": "Number of prompt tokens processed, excluding cached tokens",
    "llamacpp:prompt_seconds_total": "Total time spent processing prompts",
    "llamacpp:tokens_predicted_total": "Number of generation tokens processed",
    "llamacpp:tokens_predicted_seconds_total": "Total time spent generating tokens",
    "llamacpp:requests_processing": "Number of requests processing",
    "llamacpp:requests_deferred": "Number of requests deferred",
    "llamacpp:n_busy_slots_per_decode": "Average number of busy slots per llama_decode() call",
    "vllm:num_requests_running": "Number of requests in model execution batches.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
    "vllm:prompt_tokens_total": "Number of prefill tokens processed.",
    "vllm:generation_tokens_total": "Number of generation tokens processed.",
    "vllm:request_success_total": "Count of successfully processed requests.",
    "vllm:e2e_request_latency_seconds": "Histogram of e2e request latency in seconds.",
    "vllm:time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "vllm:time_per_output_token_seconds": "Histogram of time per output token in seconds.",
    "vllm:request_prefill_time_seconds": "Histogram of time spent in PREFILL phase.",
    "vllm:request_prompt_tokens": "Number of prefill tokens processed.",
    "vllm:request_generation_tokens": "Number of generation tokens processed.",
    "vllm:iteration_tokens_total": "Histogram of number of tokens per engine_step.",
    "llamacpp:n_decode_total": (
        "Total number of llama_decode() calls, excluding speculative decoding and multimodal "
        "decoding"
    ),
    "container_memory_working_set_bytes": "Current working set of the container in bytes",
    "kube_node_status_allocatable": "The allocatable for different resources of a node.",
}

Points = list[tuple[float, float]]
"""(virtual time, value) samples of one series."""


def pod_name(policy: ModelPolicy, pod_id: int) -> str:
    """The simulated pod's name: ``<deployment>-sim-<id>`` (a ReplicaSet pod's shape)."""
    return f"{policy.target.deployment}-sim-{pod_id:05d}"


def target_labels(policy: ModelPolicy) -> dict[str, str]:
    """The labels relabeling attaches to the model's series: the policy's equality matchers."""
    labels: dict[str, str] = {}
    for text in policy.matchers:
        matcher = parse_matcher(text)
        if matcher.op == "=":
            labels[matcher.name] = matcher.value
    labels.setdefault("namespace", policy.target.namespace)
    labels.setdefault("model", policy.model)
    return labels


@dataclass(frozen=True)
class _Served:
    """The requests one pod started, as arrays (NaN ends: still running at the horizon)."""

    arrival: np.ndarray
    start: np.ndarray
    prefilled: np.ndarray
    end: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    ttft: np.ndarray
    done: np.ndarray  # bool: completed (served)


class Family:
    """One metric family's lines: the TYPE and HELP header and its samples."""

    def __init__(self, name: str, kind: str, epoch: float) -> None:
        self.name = name
        self.kind = kind
        self.epoch = epoch
        self.body: list[str] = []

    def add(self, name: str, labels: dict[str, str], points: Iterable[tuple[float, float]]) -> None:
        """Append one series' samples (`name` may carry a suffix, e.g. ``_bucket``)."""
        rendered = _labels(labels)
        epoch = self.epoch
        self.body.extend(f"{name}{rendered} {_number(v)} {epoch + t:.3f}" for t, v in points)

    def lines(self) -> list[str]:
        """The family as OpenMetrics text lines (none when it has no sample)."""
        if not self.body:
            return []
        family = self.name.removesuffix("_total") if self.kind == "counter" else self.name
        return [f"# TYPE {family} {self.kind}", f"# HELP {family} {_HELP[self.name]}", *self.body]


FamilyOf = Callable[[str, str], Family]
"""Looks up (or starts) the family of a name and type."""


def render_lines(result: SimulationResult, epoch: float) -> list[str]:
    """The engine, container and node series of `result` as OpenMetrics lines, virtual time
    0 being the Unix time `epoch`."""
    times = np.asarray(result.scrape_times, dtype=np.float64)
    families: dict[str, Family] = {}

    def family(name: str, kind: str) -> Family:
        if name not in families:
            families[name] = Family(name, kind, epoch)
        return families[name]

    for pod in sorted(result.pods, key=lambda p: p.id):
        policy = result.policies[pod.model]
        ready = pod.ready if math.isfinite(pod.ready) else math.inf
        ended = pod.ended if math.isfinite(pod.ended) else math.inf
        name = pod_name(policy, pod.id)
        # cAdvisor reports the container from the time it runs (placed), loading included.
        placed = pod.placed if math.isfinite(pod.placed) else math.inf
        alive = times[(times >= placed) & (times < ended)]
        memory = result.memory_gib[pod.model] * GIB
        family("container_memory_working_set_bytes", "gauge").add(
            "container_memory_working_set_bytes",
            {"namespace": policy.target.namespace, "pod": name, "container": "server"},
            ((t, memory) for t in alive.tolist()),
        )
        at = times[(times >= ready) & (times < ended)]
        if not len(at):
            continue
        labels = {**target_labels(policy), "pod": name}
        served = _served(result, pod)
        queue = _queue_share(result, pod, at)
        rate = result.decode_rates[pod.model] if result.decode_rates else 1.0
        if policy.engine is Engine.LLAMACPP:
            _llamacpp(family, labels, served, at, queue, rate)
        else:
            vllm_labels = {**labels, "model_name": policy.model, "engine": "0"}
            _vllm(family, vllm_labels, served, at, queue, rate)
    allocatable = family("kube_node_status_allocatable", "gauge")
    for node in result.nodes:
        allocatable.add(
            "kube_node_status_allocatable",
            {"node": node.name, "resource": "memory", "unit": "byte"},
            ((t, node.allocatable_gib * GIB) for t in times.tolist()),
        )
    return [line for f in families.values() for line in f.lines()]


def _served(result: SimulationResult, pod: PodRecord) -> _Served:
    chosen = result.pod == pod.id
    return _Served(
        arrival=result.arrival[chosen],
        start=result.start[chosen],
        prefilled=result.prefilled[chosen],
        end=result.end[chosen],
        prompt=result.prompt[chosen].astype(np.float64),
        output=result.output[chosen].astype(np.float64),
        ttft=result.ttft[chosen],
        done=result.status[chosen] == SERVED,
    )


def _queue_share(result: SimulationResult, pod: PodRecord, at: np.ndarray) -> np.ndarray:
    """This pod's share of its model's queue at `at`: the queue split over the Ready pods
    (the remainder to the lowest ids), as a load balancer spreads it."""
    scrapes = result.scrape_times
    index = np.searchsorted(scrapes, at)
    series = result.series[pod.model]
    queue = series.queue[index]
    ready_pods = sorted(
        (p for p in result.pods if p.model == pod.model and math.isfinite(p.ready)),
        key=lambda p: p.id,
    )
    share = np.zeros(len(at))
    for k, t in enumerate(at.tolist()):
        live = [p.id for p in ready_pods if p.ready <= t < _end(p)]
        if pod.id not in live or not live:
            continue
        base, extra = divmod(int(queue[k]), len(live))
        share[k] = base + (1 if live.index(pod.id) < extra else 0)
    return share


def _end(pod: PodRecord) -> float:
    return pod.ended if math.isfinite(pod.ended) else math.inf


def _cumulative(events: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A counter of `values` added at the (finite) times `events`, sampled at `at`."""
    finite = np.isfinite(events)
    order = np.argsort(events[finite], kind="stable")
    stamps = events[finite][order]
    sums = np.concatenate(([0.0], np.cumsum(values[finite][order])))
    return sums[np.searchsorted(stamps, at, side="right")]


def _ramps(begins: np.ndarray, ends: np.ndarray, rates: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Σ rate·clip(t - begin, 0, end - begin) at each `t` in `at`: a counter growing linearly
    while each interval runs."""
    stamps = np.concatenate((begins, ends))
    slopes = np.concatenate((rates, -rates))
    order = np.argsort(stamps, kind="stable")
    stamps, slopes = stamps[order], slopes[order]
    slope_after = np.cumsum(slopes)
    value_at = np.concatenate(([0.0], np.cumsum(slope_after[:-1] * np.diff(stamps))))
    k = np.searchsorted(stamps, at, side="right") - 1
    out = np.zeros(len(at))
    ok = k >= 0
    out[ok] = value_at[k[ok]] + slope_after[k[ok]] * (at[ok] - stamps[k[ok]])
    return out


def _busy(served: _Served, at: np.ndarray) -> np.ndarray:
    """Requests holding a slot at each time of `at`."""
    end = np.where(np.isfinite(served.end), served.end, math.inf)
    began = np.searchsorted(np.sort(served.start), at, side="right")
    ended = np.searchsorted(np.sort(end), at, side="right")
    return (began - ended).astype(np.float64)


def _sweep(served: _Served) -> tuple[np.ndarray, np.ndarray]:
    """The pod's busy slots as a step function: (change times, busy after each), requests
    still running at the horizon never ending."""
    end = np.where(np.isfinite(served.end), served.end, math.inf)
    stamps = np.concatenate((served.start, end))
    steps = np.concatenate((np.ones(len(end)), -np.ones(len(end))))
    order = np.argsort(stamps, kind="stable")
    stamps, steps = stamps[order], steps[order]
    finite = np.isfinite(stamps)
    stamps, steps = stamps[finite], steps[finite]
    return stamps, np.cumsum(steps)


def _time_where(
    served: _Served, at: np.ndarray, weight: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """∫ weight(busy(t)) dt from the pod's start to each time of `at`."""
    stamps, level = _sweep(served)
    if not len(stamps):
        return np.zeros(len(at))
    values = weight(level)
    accrued = np.concatenate(([0.0], np.cumsum(values[:-1] * np.diff(stamps))))
    k = np.searchsorted(stamps, at, side="right") - 1
    out = np.zeros(len(at))
    ok = k >= 0
    out[ok] = accrued[k[ok]] + values[k[ok]] * (at[ok] - stamps[k[ok]])
    return out


def _within(bound: float) -> Callable[[np.ndarray], np.ndarray]:
    """1 where a pod is busy with at most `bound` slots, else 0."""
    return lambda busy: ((busy > 0) & (busy <= bound)).astype(np.float64)


def _decode_calls(served: _Served, at: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode calls so far and busy slots summed over them: the simulator has no batch steps,
    so a busy pod makes one call per token time of one stream (`rate` calls/s), each with
    every busy slot in it."""
    calls = _time_where(served, at, lambda b: (b > 0).astype(np.float64)) * rate
    slots = _time_where(served, at, lambda b: b.astype(np.float64)) * rate
    return calls, slots


def _add(family: FamilyOf, name: str, kind: str, labels: dict[str, str], points: Points) -> None:
    """One series of `name` (a `kind` family) with `labels`."""
    family(name, kind).add(name, labels, points)


def _points(at: np.ndarray, values: np.ndarray) -> Points:
    return list(zip(at.tolist(), values.tolist(), strict=True))


def _llamacpp(
    family: FamilyOf,
    labels: dict[str, str],
    served: _Served,
    at: np.ndarray,
    queue: np.ndarray,
    rate: float,
) -> None:
    done = served.done
    end = np.where(done, served.end, math.nan)
    prefill_s = served.prefilled - served.start
    counters = {
        "llamacpp:prompt_tokens_total": _cumulative(served.prefilled, served.prompt, at),
        "llamacpp:prompt_seconds_total": _cumulative(served.prefilled, prefill_s, at),
        "llamacpp:tokens_predicted_total": _cumulative(end, served.output, at),
        "llamacpp:tokens_predicted_seconds_total": _cumulative(
            end, served.end - served.prefilled, at
        ),
    }
    for name, values in counters.items():
        family(name, "counter").add(name, labels, _points(at, values))
    busy = _busy(served, at)
    _add(family, "llamacpp:requests_processing", "gauge", labels, _points(at, busy))
    _add(family, "llamacpp:requests_deferred", "gauge", labels, _points(at, queue))
    calls, slots = _decode_calls(served, at, rate)
    _add(family, "llamacpp:n_decode_total", "counter", labels, _points(at, calls))
    average = np.where(calls > 0, slots / np.maximum(calls, 1e-12), 0.0)
    _add(family, "llamacpp:n_busy_slots_per_decode", "gauge", labels, _points(at, average))


def _vllm(
    family: FamilyOf,
    labels: dict[str, str],
    served: _Served,
    at: np.ndarray,
    queue: np.ndarray,
    rate: float,
) -> None:
    done = served.done
    end = np.where(done, served.end, math.nan)
    _add(family, "vllm:num_requests_running", "gauge", labels, _points(at, _busy(served, at)))
    _add(family, "vllm:num_requests_waiting", "gauge", labels, _points(at, queue))
    family("vllm:prompt_tokens_total", "counter").add(
        "vllm:prompt_tokens_total",
        labels,
        _points(at, _cumulative(served.prefilled, served.prompt, at)),
    )
    decode_s = served.end - served.prefilled
    rates = np.where(done, served.output / np.maximum(decode_s, 1e-12), 0.0)
    generated = _ramps(
        np.where(done, served.prefilled, 0.0), np.where(done, served.end, 0.0), rates, at
    )
    # Whole tokens, and never down for float rounding in the sum of ramps.
    generated = np.maximum.accumulate(np.floor(generated + 1e-6))
    _add(family, "vllm:generation_tokens_total", "counter", labels, _points(at, generated))
    family("vllm:request_success_total", "counter").add(
        "vllm:request_success_total",
        {**labels, "finished_reason": "stop"},
        _points(at, _cumulative(end, np.ones(len(end)), at)),
    )
    ones = np.ones(len(end))
    first_token = served.arrival + served.ttft  # NaN for requests that never started
    per_token = np.where(done, decode_s / np.maximum(served.output, 1.0), 0.0)
    histograms: Sequence[tuple[str, tuple[float, ...], np.ndarray, np.ndarray]] = (
        ("vllm:e2e_request_latency_seconds", LATENCY_BUCKETS, served.end - served.arrival, ones),
        ("vllm:time_to_first_token_seconds", TTFT_BUCKETS, served.ttft, ones),
        ("vllm:time_per_output_token_seconds", TPOT_BUCKETS, per_token, served.output),
        (
            "vllm:request_prefill_time_seconds",
            LATENCY_BUCKETS,
            served.prefilled - served.start,
            ones,
        ),
        ("vllm:request_prompt_tokens", TOKEN_BUCKETS, served.prompt, ones),
        ("vllm:request_generation_tokens", TOKEN_BUCKETS, served.output, ones),
    )
    for name, buckets, values, weights in histograms:
        # vLLM observes the first token's latency in the step that produced it, the rest
        # when the request finishes.
        events = first_token if name == "vllm:time_to_first_token_seconds" else end
        _histogram(family(name, "histogram"), name, buckets, labels, events, values, weights, at)
    _iterations(family("vllm:iteration_tokens_total", "histogram"), labels, served, at, rate)


def _iterations(
    out: Family, labels: dict[str, str], served: _Served, at: np.ndarray, rate: float
) -> None:
    """``vllm:iteration_tokens_total``: tokens per engine step, one step per token time of one
    stream (`rate`/s) while busy, each with one token per busy request (see `_decode_calls`)."""
    name = "vllm:iteration_tokens_total"
    bounds = [*ITERATION_BUCKETS, math.inf]
    columns = [_time_where(served, at, _within(bound)) * rate for bound in bounds]
    calls, slots = _decode_calls(served, at, rate)
    names = [_labels({**labels, "le": "+Inf" if math.isinf(b) else repr(float(b))}) for b in bounds]
    plain = _labels(labels)
    for k, t in enumerate(at.tolist()):
        stamp = f"{out.epoch + t:.3f}"
        out.body.extend(
            f"{name}_bucket{le} {_number(column[k])} {stamp}"
            for le, column in zip(names, columns, strict=True)
        )
        out.body.append(f"{name}_count{plain} {_number(calls[k])} {stamp}")
        out.body.append(f"{name}_sum{plain} {_number(slots[k])} {stamp}")


def _histogram(
    out: Family,
    name: str,
    buckets: tuple[float, ...],
    labels: dict[str, str],
    events: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    at: np.ndarray,
) -> None:
    """A cumulative histogram of `values` (each counted `weights` times) observed at `events`:
    at every time of `at` its buckets, count and sum, as prometheus_client writes them."""
    ok = np.isfinite(events)
    events, values, weights = events[ok], values[ok], weights[ok]
    bounds = [*buckets, math.inf]
    names = [_labels({**labels, "le": "+Inf" if math.isinf(b) else repr(float(b))}) for b in bounds]
    columns = [_cumulative(events, np.where(values <= b, weights, 0.0), at) for b in bounds]
    counts = _cumulative(events, weights, at)
    sums = _cumulative(events, values * weights, at)
    plain = _labels(labels)
    for k, t in enumerate(at.tolist()):
        stamp = f"{out.epoch + t:.3f}"
        out.body.extend(
            f"{name}_bucket{le} {_number(column[k])} {stamp}"
            for le, column in zip(names, columns, strict=True)
        )
        out.body.append(f"{name}_count{plain} {_number(counts[k])} {stamp}")
        out.body.append(f"{name}_sum{plain} {_number(sums[k])} {stamp}")


def _labels(labels: dict[str, str]) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
