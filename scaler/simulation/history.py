"""A model's recorded history, step by step: what ``scaler record`` and ``scaler calibrate`` read.

For each policy this reads, over one range and step, the series its engine exports (names
as upstream, selected by the policy's matchers, each in its colon and underscore spelling as
the live templates do) and turns them into per-step figures: counter increases summed over
the model's pods (`scaler.core.calibration.counter_increases`: resets and pods born in the
range counted right, no ``increase()`` extrapolation), and gauges per pod.

Which series, per engine (see ``scaler.simulation.engine_metrics`` for what they mean):

- requests: vLLM ``vllm:time_to_first_token_seconds_count`` (requests that got their first
  token, counted then: put back by their time to first token, from the histogram);
  llama.cpp has no request counter:
  the activator's ``scaler_activator_forwarded_total`` (at arrival, or when a held request
  is let through: put back by the step's mean ``scaler_activator_wait_seconds``), plus the
  activator's ``scaler_activator_timeouts_total`` for requests given up while the model was
  at zero (no engine saw those);
- tokens: vLLM ``vllm:prompt_tokens_total`` (at the prefill) and the generation-token
  histogram ``vllm:request_generation_tokens`` (its sum, at completion); llama.cpp
  ``llamacpp:prompt_tokens_total`` and ``llamacpp:tokens_predicted_total``;
- speeds: llama.cpp ``llamacpp:prompt_seconds_total``, ``llamacpp:tokens_predicted_seconds_total``;
  vLLM ``vllm:request_prefill_time_seconds`` (with ``vllm:request_prompt_tokens``, both at
  completion) and ``vllm:time_per_output_token_seconds``;
- busy streams per decode step, per pod: llama.cpp ``llamacpp:n_busy_slots_per_decode``
  (an average since the server started) times ``llamacpp:n_decode_total``, vLLM
  ``vllm:iteration_tokens_total`` (sum over count); their increases give the step's mean;
- busy slots and queue per pod: ``llamacpp:requests_processing`` / ``requests_deferred``,
  ``vllm:num_requests_running`` / ``num_requests_waiting``;
- memory: cAdvisor ``container_memory_working_set_bytes`` of the target Deployment's pods
  (``pod=~"<deployment>-.+"`` in the target namespace; the pod cgroup's and pause
  container's series excluded);
- cold starts: scaler's own ``scaler_cold_start_duration_seconds`` (its ``_sum`` and
  ``_count``: a step with one cold start gives its exact duration).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scaler.core import Engine, ModelPolicy
from scaler.core.calibration import counter_increases
from scaler.metric_names import (
    ACTIVATOR_FORWARDED,
    ACTIVATOR_TIMEOUTS,
    ACTIVATOR_WAIT,
    COLD_START_DURATION,
    MODEL_LABEL,
)
from scaler.sources.history import Grid, PrometheusHistory, RangeSeries
from scaler.sources.templates import model_matcher

MEMORY = "container_memory_working_set_bytes"
NODE_ALLOCATABLE = "kube_node_status_allocatable"


@dataclass(frozen=True)
class EngineNames:
    """The upstream series one engine's history is read from."""

    requests: str | None  # None: the activator's forwarded counter
    prompt_tokens: str
    output_tokens: str
    prefill_seconds: str
    prefill_tokens: str  # the prompt tokens counted with `prefill_seconds`
    decode_seconds: str
    decode_tokens: str
    busy: str
    queue: str
    latency: str | None  # a histogram's base name; arrivals are put back by its values
    # Busy slots per decode call: (summed busy slots, calls) counters; llama.cpp exports
    # the average and the calls, whose product is the sum.
    batch_slots: str
    batch_calls: str


ENGINE_NAMES = {
    Engine.LLAMACPP: EngineNames(
        requests=None,
        prompt_tokens="llamacpp:prompt_tokens_total",
        output_tokens="llamacpp:tokens_predicted_total",
        prefill_seconds="llamacpp:prompt_seconds_total",
        prefill_tokens="llamacpp:prompt_tokens_total",
        decode_seconds="llamacpp:tokens_predicted_seconds_total",
        decode_tokens="llamacpp:tokens_predicted_total",
        busy="llamacpp:requests_processing",
        queue="llamacpp:requests_deferred",
        latency=None,
        batch_slots="llamacpp:n_busy_slots_per_decode",
        batch_calls="llamacpp:n_decode_total",
    ),
    Engine.VLLM: EngineNames(
        requests="vllm:time_to_first_token_seconds_count",
        prompt_tokens="vllm:prompt_tokens_total",
        output_tokens="vllm:request_generation_tokens_sum",
        prefill_seconds="vllm:request_prefill_time_seconds_sum",
        prefill_tokens="vllm:request_prompt_tokens_sum",
        decode_seconds="vllm:time_per_output_token_seconds_sum",
        decode_tokens="vllm:time_per_output_token_seconds_count",
        busy="vllm:num_requests_running",
        queue="vllm:num_requests_waiting",
        latency="vllm:time_to_first_token_seconds",
        batch_slots="vllm:iteration_tokens_total_sum",
        batch_calls="vllm:iteration_tokens_total_count",
    ),
}


def queries_per_model(engine: Engine) -> int:
    """Range queries `HistoryReader.read` sends for a model of `engine`."""
    # requests, timeouts, held (2), prompt, output, prefill seconds, decode (2), batches (2),
    # busy, queue, memory, cold starts (2); vLLM adds latency (3) and prefill tokens.
    return 16 + (4 if ENGINE_NAMES[engine].latency is not None else 0)


def selector(names: str, matchers: Sequence[str]) -> str:
    """``{__name__=~"<name>|<name with _ for :>",<matchers>}`` (both spellings, as live)."""
    spellings = [names] + ([names.replace(":", "_")] if ":" in names else [])
    return "{" + ",".join([f'__name__=~"{"|".join(spellings)}"', *matchers]) + "}"


def scrape_interval(
    client: PrometheusHistory, policies: Sequence[ModelPolicy], start: float, end: float
) -> float | None:
    """The models' scrape interval, measured: the median spacing of the raw samples of each
    model's output-token counter, in the range's last hour, else its first; the shortest
    such median over the series (None when no model has two samples in either hour).

    ``scaler record`` steps at it and ``scaler calibrate`` writes it into the scenario, so
    an operator who scrapes every 5 s (the shipped ServiceMonitors) or 30 s (a common
    Prometheus default) records and replays their own data path without saying which.
    """
    window = max(1.0, min(_PROBE_WINDOW_SECONDS, end - start))  # Prometheus wants >= 1s
    selectors = [selector(ENGINE_NAMES[p.engine].output_tokens, list(p.matchers)) for p in policies]
    for at in dict.fromkeys((end, start + window)):  # the last hour first: today's config
        medians = [
            statistics.median(b - a for a, b in itertools.pairwise(times))
            for query in dict.fromkeys(selectors)
            for times in client.sample_times(query, at=at, window=window)
            if len(times) >= 2
        ]
        if medians:
            # Prometheus spaces a target's scrapes by the interval to the millisecond; the
            # rounding keeps a one-off late scrape from showing as 5.001 s.
            return round(min(medians), 1)
    return None


# How much of the range the scrape interval is measured on: an hour holds 720 samples per
# series at 5 s, and one instant query returns them all.
_PROBE_WINDOW_SECONDS = 3600.0


def _pod_of(labels: dict[str, str] | object) -> str:
    assert isinstance(labels, dict)
    return str(labels.get("pod") or labels.get("instance") or "")


@dataclass
class PodGauges:
    """One pod's gauges at every step edge (NaN: no sample)."""

    busy: list[float]
    queue: list[float]


@dataclass
class ModelHistory:
    """One model's figures per step (index k: the step from edge k to edge k+1)."""

    policy: ModelPolicy
    grid: Grid
    requests: list[float]
    timeouts: list[float]
    prompt_tokens: list[float]
    output_tokens: list[float]
    held: list[float]  # requests let through after a hold, and their summed waits
    held_wait: list[float]
    latency_count: list[float]
    latency_sum: list[float]
    # The latency histogram's cumulative bucket increases per step, by upper bound.
    latency_buckets: dict[float, list[float]]
    prefill_seconds: list[float]
    prefill_tokens: list[float]
    # Per pod per step: decode seconds and tokens (the inter-token time's two sides).
    decode: dict[str, tuple[list[float], list[float]]]
    gauges: dict[str, PodGauges]
    # Per pod per step: busy slots summed over decode calls, and the calls.
    batches: dict[str, tuple[list[float], list[float]]]
    memory_peaks: dict[str, float]  # bytes, per pod
    cold_starts: list[float]  # seconds, one per cold start (a step's mean if several)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "metric{matchers}" with no series

    @property
    def model(self) -> str:
        """The policy's model name."""
        return self.policy.model

    @property
    def seen(self) -> bool:
        """Whether any request was seen for the model."""
        return sum(v for v in self.requests if math.isfinite(v)) > 0

    def busy_total(self) -> list[float]:
        """Busy slots summed over the pods at each step's end edge (NaN: no pod reported)."""
        out = [math.nan] * (self.grid.count - 1)
        for gauges in self.gauges.values():
            for k in range(1, self.grid.count):
                value = gauges.busy[k]
                if math.isfinite(value):
                    out[k - 1] = value if math.isnan(out[k - 1]) else out[k - 1] + value
        return out


Reporter = Callable[[str], None]


class HistoryReader:
    """Reads `ModelHistory` for policies from one Prometheus over one grid."""

    def __init__(self, client: PrometheusHistory, grid: Grid) -> None:
        self.client = client
        self.grid = grid
        self._done = 0.0
        self._total = 0.0

    def plan(self, policies: Sequence[ModelPolicy], *, nodes: bool = True) -> None:
        """Which models (and whether the nodes) will be read: the whole job's progress."""
        queries = sum(queries_per_model(p.engine) for p in policies) + (1 if nodes else 0)
        self._total = float(queries * self.grid.count)

    def _range(self, query: str) -> list[RangeSeries]:
        series = self.client.range(query, self.grid, done=self._done, total=self._total)
        self._done += self.grid.count
        return series

    def _increases(
        self, query: str, model: ModelHistory, label: str, *, required: bool = False
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Summed increases per step, and the increases per pod."""
        series = self._range(query)
        steps = self.grid.count - 1
        if not series:
            if required:
                model.missing.append(query)
            return [0.0] * steps, {}
        total = [0.0] * steps
        per_pod: dict[str, list[float]] = {}
        resets = 0
        for s in series:
            found = counter_increases(s.values)
            resets += found.resets
            pod = per_pod.setdefault(_pod_of(dict(s.labels)), [0.0] * steps)
            for k, value in enumerate(found.steps):
                if math.isfinite(value):
                    total[k] += value
                    pod[k] += value
            for first, last in found.gaps:
                model.notes.append(
                    f"{model.model}: {label} {dict(s.labels).get('pod', '')}: no sample from "
                    f"{_iso(self.grid.time(first))} to {_iso(self.grid.time(last))} "
                    f"({last - first + 1} steps); its increase lands after the gap"
                )
        if resets:
            model.notes.append(
                f"{model.model}: {label}: {resets} counter reset(s) (a server restarted); "
                "counted from zero after each"
            )
        return total, per_pod

    def _buckets(self, query: str) -> dict[float, list[float]]:
        """A histogram's bucket increases per step summed over pods, by ``le``."""
        steps = self.grid.count - 1
        out: dict[float, list[float]] = {}
        for s in self._range(query):
            try:
                le = float(dict(s.labels).get("le", "nan").replace("+Inf", "inf"))
            except ValueError:
                continue
            row = out.setdefault(le, [0.0] * steps)
            for k, value in enumerate(counter_increases(s.values).steps):
                if math.isfinite(value):
                    row[k] += value
        return dict(sorted(out.items()))

    def _gauges(self, query: str) -> dict[str, list[float]]:
        return {_pod_of(dict(s.labels)): list(s.values) for s in self._range(query)}

    def read(self, policy: ModelPolicy) -> ModelHistory:
        """The model's history (see the module docstring for the series)."""
        names = ENGINE_NAMES[policy.engine]
        grid = self.grid
        steps = grid.count - 1
        zeros = [0.0] * steps  # never mutated: each field below is replaced, not appended to
        model = ModelHistory(
            policy, grid, zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros, {}, zeros,
            zeros, {}, {}, {}, {}, [],
        )  # fmt: skip
        matchers = list(policy.matchers)
        own = [model_matcher(MODEL_LABEL, [policy.model])]

        def engine(name: str) -> str:
            return selector(name, matchers)

        def activator(name: str) -> str:
            return f"{name}{{{','.join(own)}}}"

        if names.requests is None:
            model.requests, _ = self._increases(
                activator(ACTIVATOR_FORWARDED), model, ACTIVATOR_FORWARDED, required=True
            )
        else:
            model.requests, _ = self._increases(
                engine(names.requests), model, names.requests, required=True
            )
        model.timeouts, _ = self._increases(activator(ACTIVATOR_TIMEOUTS), model, "timeouts")
        model.held, _ = self._increases(activator(f"{ACTIVATOR_WAIT}_count"), model, "held")
        model.held_wait, _ = self._increases(activator(f"{ACTIVATOR_WAIT}_sum"), model, "held")
        model.prompt_tokens, _ = self._increases(
            engine(names.prompt_tokens), model, names.prompt_tokens, required=True
        )
        model.output_tokens, _ = self._increases(
            engine(names.output_tokens), model, names.output_tokens, required=True
        )
        if names.latency is not None:
            model.latency_count, _ = self._increases(
                engine(f"{names.latency}_count"), model, names.latency
            )
            model.latency_sum, _ = self._increases(
                engine(f"{names.latency}_sum"), model, names.latency
            )
            model.latency_buckets = self._buckets(engine(f"{names.latency}_bucket"))
        model.prefill_seconds, _ = self._increases(
            engine(names.prefill_seconds), model, names.prefill_seconds
        )
        model.prefill_tokens = (
            model.prompt_tokens
            if names.prefill_tokens == names.prompt_tokens
            else self._increases(engine(names.prefill_tokens), model, names.prefill_tokens)[0]
        )
        _, decode_s = self._increases(engine(names.decode_seconds), model, names.decode_seconds)
        _, decode_n = self._increases(engine(names.decode_tokens), model, names.decode_tokens)
        model.decode = {pod: (decode_s[pod], decode_n.get(pod, [0.0] * steps)) for pod in decode_s}
        model.batches = self._batches(policy, names, engine)
        busy = self._gauges(engine(names.busy))
        queue = self._gauges(engine(names.queue))
        model.gauges = {
            pod: PodGauges(busy[pod], queue.get(pod, [math.nan] * grid.count)) for pod in busy
        }
        memory = self._gauges(
            f'{MEMORY}{{namespace="{policy.target.namespace}",'
            f'pod=~"{policy.target.deployment}-.+",container!="",container!="POD"}}'
        )
        model.memory_peaks = {
            pod: max((v for v in values if math.isfinite(v)), default=math.nan)
            for pod, values in memory.items()
        }
        counts, _ = self._increases(activator(f"{COLD_START_DURATION}_count"), model, "cold")
        sums, _ = self._increases(activator(f"{COLD_START_DURATION}_sum"), model, "cold")
        for count, total in zip(counts, sums, strict=True):
            n = round(count)
            if n > 0:
                model.cold_starts.extend([total / n] * n)
        return model

    def _batches(
        self, policy: ModelPolicy, names: EngineNames, engine: Callable[[str], str]
    ) -> dict[str, tuple[list[float], list[float]]]:
        """Per pod: the increases of busy slots summed over decode calls, and of the calls."""
        steps = self.grid.count - 1
        calls = {_pod_of(dict(s.labels)): s.values for s in self._range(engine(names.batch_calls))}
        slots = {_pod_of(dict(s.labels)): s.values for s in self._range(engine(names.batch_slots))}
        out: dict[str, tuple[list[float], list[float]]] = {}
        for pod, counted in calls.items():
            if pod not in slots:
                continue
            summed = slots[pod]
            if policy.engine is Engine.LLAMACPP:  # an average per call: times the calls
                summed = tuple(a * n for a, n in zip(summed, counted, strict=True))
            out[pod] = (
                [v if math.isfinite(v) else 0.0 for v in counter_increases(summed).steps],
                [v if math.isfinite(v) else 0.0 for v in counter_increases(counted).steps],
            )
            assert len(out[pod][0]) == steps
        return out

    def nodes(self) -> dict[str, float]:
        """Allocatable memory per node (bytes) from kube-state-metrics: the largest seen."""
        found: dict[str, float] = {}
        for s in self._range(f'{NODE_ALLOCATABLE}{{resource="memory"}}'):
            node = dict(s.labels).get("node", "")
            peak = max((v for v in s.values if math.isfinite(v)), default=math.nan)
            if node and math.isfinite(peak):
                found[node] = max(found.get(node, 0.0), peak)
        return found


def _iso(seconds: float) -> str:
    import datetime as dt  # only for messages

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
