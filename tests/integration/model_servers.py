"""Emulated model servers for integration tests: vLLM and llama.cpp ``/metrics`` endpoints.

Each emulator is an aiohttp server on ``127.0.0.1:0`` running in its own thread with its own
event loop, so it keeps answering Prometheus' scrapes whether the test is sync or async, and
whatever the test's event loop is doing. The test sets the ground truth
(`set(waiting=..., running=..., tokens_per_second=...)`) and reads it back (`truth()`); the
emulator exports it under the EXACT upstream metric names (docs/metrics.md, "Engine series
scaler reads": vLLM's V1 engine loggers, llama.cpp's ``llama-server --metrics``):

- `VllmServer`: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``, ``vllm:generation_tokens_total``,
  ``vllm:prompt_tokens_total``, ``vllm:request_success_total{finished_reason}``, all with the
  labels ``model_name`` and ``engine`` (V1 engine, vllm-project/vllm
  ``vllm/v1/metrics/loggers.py``; no vLLM runs here, so this one is written from the source);
- `LlamaCppServer`: the 15 ``llamacpp:*`` series of ``llama-server --metrics`` (ggml-org/
  llama.cpp ``tools/server/server-task.cpp``), without any label, checked against the real
  server (its docstring says what is emulated and what differs);
- `StaticExporter`: arbitrary series set by the test (activator pending counts,
  kube-state-metrics, ...).

The real llama-server runs in tests/integration/llama_server.py; the emulators stay for what
it cannot do here: vLLM, exact rates at any instant, and faults on demand.

Counters advance at the set rate against a clock (``time.monotonic`` by default, injectable),
so ``rate(counter[w])`` in Prometheus converges to the set rate once the window is full of
scrapes. Changing a rate keeps the counter continuous (no reset).

The body is always text format 0.0.4 (``Content-Type: text/plain; version=0.0.4``) whatever
the Accept header says, so Prometheus 2.42 keeps the colons: a prometheus_client >= 0.23
exporter that negotiates OpenMetrics gets its colons escaped to underscores
(prometheus/client_python#1177). `Spelling.UNDERSCORE` serves ``vllm_num_requests_waiting``
etc. instead, as such an exporter ends up stored. `Fault` modes serve NaN, +Inf, negative
values or an unparseable body, for fault tests.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

from aiohttp import web

CONTENT_TYPE_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
"""What the emulators answer with, whatever the scraper accepts (colon names survive); the
llama.cpp one sends llama-server's own `CONTENT_TYPE_LLAMACPP`, also text format 0.0.4."""


class Spelling(StrEnum):
    """How metric names are spelled in the exposition."""

    COLON = "colon"  # vllm:num_requests_waiting, as upstream writes them
    UNDERSCORE = "underscore"  # vllm_num_requests_waiting, as an OpenMetrics escaping stores them


class Fault(StrEnum):
    """A broken exporter, for fault tests."""

    NONE = "none"
    NAN = "nan"  # every value is NaN
    INF = "inf"  # every value is +Inf
    NEGATIVE = "negative"  # every value is negative
    GARBAGE = "garbage"  # the body does not parse: the scrape fails, series go stale
    HTTP_500 = "http_500"  # the scrape fails with an error status


@dataclass(frozen=True)
class GroundTruth:
    """What the emulated engine is doing now; the values the adapter should end up serving.

    `waiting` is the queue (vLLM waiting / llama.cpp deferred), `running` the busy slots;
    the per-second fields are the rates the counters advance at. llama.cpp has no request
    counter: its `requests_per_second` is kept for the test but not exported.
    """

    waiting: float = 0.0
    running: float = 0.0
    tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    requests_per_second: float = 0.0
    kv_cache_usage: float = 0.0

    @property
    def inflight(self) -> float:
        """Requests being processed or waiting (the in-flight signal)."""
        return self.running + self.waiting


class _Counter:
    """A monotonic counter advancing at `rate` per second of `clock`; thread-unsafe (locked
    by the owner)."""

    def __init__(self, clock: Callable[[], float], start: float = 0.0) -> None:
        self._clock = clock
        self._value = start
        self._since = clock()
        self._rate = 0.0

    def value(self) -> float:
        return self._value + self._rate * (self._clock() - self._since)

    def set_rate(self, rate: float) -> None:
        self._value = self.value()
        self._since = self._clock()
        self._rate = rate


class ExpositionServer:
    """A ``/metrics`` endpoint served from a private thread and event loop.

    Subclasses implement `_samples()`; this class handles the HTTP side, the text format,
    faults and the thread. Use as a context manager or `start()`/`stop()`.
    """

    content_type = CONTENT_TYPE_0_0_4

    def __init__(self, *, spelling: Spelling = Spelling.COLON) -> None:
        self.spelling = spelling
        self._lock = threading.Lock()
        self._fault = Fault.NONE
        self._scrapes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns once the port is bound."""
        started: Future[int] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        self._port = started.result(timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, the scrape target address."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The metrics URL."""
        return f"http://{self.address}/metrics"

    @property
    def scrapes(self) -> int:
        """How many times /metrics has been requested."""
        with self._lock:
            return self._scrapes

    def set_fault(self, fault: Fault) -> None:
        """Break (or, with Fault.NONE, repair) the exporter from the next scrape on."""
        with self._lock:
            self._fault = fault

    def exposition(self) -> str:
        """The body the next scrape would get (without fault), for inspection in tests."""
        with self._lock:
            return self._render(Fault.NONE)

    # --- serving ---------------------------------------------------------------------------

    def _serve(self, started: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            app = web.Application()
            app.router.add_get("/metrics", self._handle)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self._runner = runner
            sockname = runner.addresses[0]
            started.set_result(int(sockname[1]))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        with self._lock:
            self._scrapes += 1
            fault = self._fault
            if fault is Fault.HTTP_500:
                return web.Response(status=500, text="emulated engine failure")
            body = self._render(fault)
        return web.Response(body=body.encode(), headers={"Content-Type": self.content_type})

    def _render(self, fault: Fault) -> str:
        if fault is Fault.GARBAGE:
            return 'vllm:num_requests_waiting{model_name="x" 3\n}}} not metrics at all ((\n'
        lines: list[str] = []
        for name, kind, help_text, series in self._samples():
            spelled = self._spell(name)
            lines.append(f"# HELP {spelled} {help_text}")
            lines.append(f"# TYPE {spelled} {kind}")
            for labels, value in series:
                lines.append(f"{spelled}{_labels(labels)} {self._number(_apply(fault, value))}")
        return "\n".join(lines) + "\n"

    def _number(self, value: float) -> str:
        return _number(value)

    def _spell(self, name: str) -> str:
        return name.replace(":", "_") if self.spelling is Spelling.UNDERSCORE else name

    def _samples(self) -> list[tuple[str, str, str, list[tuple[Mapping[str, str], float]]]]:
        """(name, type, help, [(labels, value)]) for each metric; called under the lock."""
        raise NotImplementedError


class _EngineServer(ExpositionServer):
    """Shared ground truth and counters of the emulated engines."""

    def __init__(
        self,
        *,
        spelling: Spelling = Spelling.COLON,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spelling=spelling)
        self._clock = clock
        self._truth = GroundTruth()
        self._counters: dict[str, _Counter] = {}

    def _counter(self, name: str) -> _Counter:
        if name not in self._counters:
            self._counters[name] = _Counter(self._clock)
        return self._counters[name]

    def set(
        self,
        *,
        waiting: float | None = None,
        running: float | None = None,
        tokens_per_second: float | None = None,
        prompt_tokens_per_second: float | None = None,
        requests_per_second: float | None = None,
        kv_cache_usage: float | None = None,
    ) -> GroundTruth:
        """Change the ground truth (unset arguments keep their value); returns the new truth."""
        changes = {
            "waiting": waiting,
            "running": running,
            "tokens_per_second": tokens_per_second,
            "prompt_tokens_per_second": prompt_tokens_per_second,
            "requests_per_second": requests_per_second,
            "kv_cache_usage": kv_cache_usage,
        }
        with self._lock:
            self._truth = replace(
                self._truth, **{k: v for k, v in changes.items() if v is not None}
            )
            self._apply_rates(self._truth)
            return self._truth

    def truth(self) -> GroundTruth:
        """The current ground truth."""
        with self._lock:
            return self._truth

    def counter_value(self, name: str) -> float:
        """The value a counter (upstream name, colon spelling) would be scraped at now."""
        with self._lock:
            return self._counter(name).value()

    def _apply_rates(self, truth: GroundTruth) -> None:
        raise NotImplementedError


class VllmServer(_EngineServer):
    """An emulated vLLM OpenAI server (V1 engine metrics).

    Finished requests are split 3:1 between ``finished_reason="stop"`` and ``"length"`` (and
    ``"abort"`` stays at 0), so a query that forgets to sum over the reason gets it wrong.
    """

    def __init__(
        self,
        *,
        model_name: str = "mistral-7b",
        engine: str = "0",
        spelling: Spelling = Spelling.COLON,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spelling=spelling, clock=clock)
        self.model_name = model_name
        self.engine = engine

    def _apply_rates(self, truth: GroundTruth) -> None:
        self._counter("vllm:generation_tokens_total").set_rate(truth.tokens_per_second)
        self._counter("vllm:prompt_tokens_total").set_rate(truth.prompt_tokens_per_second)
        self._counter("stop").set_rate(truth.requests_per_second * 0.75)
        self._counter("length").set_rate(truth.requests_per_second * 0.25)
        self._counter("abort").set_rate(0.0)

    def _samples(self) -> list[tuple[str, str, str, list[tuple[Mapping[str, str], float]]]]:
        truth = self._truth
        base = {"model_name": self.model_name, "engine": self.engine}

        def one(value: float) -> list[tuple[Mapping[str, str], float]]:
            return [(base, value)]

        return [
            ("vllm:num_requests_running", "gauge", "Requests in the running batch.",
             one(truth.running)),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting to be processed.",
             one(truth.waiting)),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
             one(truth.kv_cache_usage)),
            ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
             one(self._counter("vllm:prompt_tokens_total").value())),
            ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
             one(self._counter("vllm:generation_tokens_total").value())),
            ("vllm:request_success_total", "counter", "Count of successfully processed requests.",
             [({**base, "finished_reason": reason}, self._counter(reason).value())
              for reason in ("stop", "length", "abort")]),
        ]  # fmt: skip


LLAMACPP_SERIES: Final = (
    ("llamacpp:prompt_tokens_total", "counter",
     "Number of prompt tokens processed, excluding cached tokens"),
    ("llamacpp:prompt_tokens_cached_total", "counter",
     "Number of prompt tokens reused from the cache"),
    ("llamacpp:prompt_seconds_total", "counter", "Total time spent processing prompts"),
    ("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed"),
    ("llamacpp:tokens_predicted_seconds_total", "counter", "Total time spent generating tokens"),
    ("llamacpp:n_decode_total", "counter",
     "Total number of llama_decode() calls, excluding speculative decoding and multimodal "
     "decoding"),
    ("llamacpp:n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)"),
    ("llamacpp:spec_decode_num_draft_tokens_total", "counter",
     "Speculative: Total draft tokens generated"),
    ("llamacpp:spec_decode_num_accepted_tokens_total", "counter",
     "Speculative: Total draft tokens accepted by the target model"),
    ("llamacpp:spec_decode_num_drafts_total", "counter",
     "Speculative: Total speculative decoding verification steps"),
    ("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s"),
    ("llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s"),
    ("llamacpp:requests_processing", "gauge", "Number of requests processing"),
    ("llamacpp:requests_deferred", "gauge", "Number of requests deferred"),
    ("llamacpp:n_busy_slots_per_decode", "gauge",
     "Average number of busy slots per llama_decode() call"),
)  # fmt: skip
"""(name, type, HELP) of every series ``llama-server --metrics`` prints, in its order: read off
the real server of llama.cpp tag b11434 (tests/integration/test_llamacpp_metrics.py compares
them with the running binary, so an upstream change fails a test)."""

CONTENT_TYPE_LLAMACPP = "text/plain; version=0.0.4"
"""llama-server's /metrics Content-Type (no charset parameter)."""


class LlamaCppServer(_EngineServer):
    """An emulated ``llama-server --metrics``: the 15 ``llamacpp:*`` series of `LLAMACPP_SERIES`
    with their upstream types and HELP texts, no labels.

    Checked against the real server (tests/integration/test_llamacpp_metrics.py):

    - names, types, HELP texts, order, no labels, Content-Type ``text/plain; version=0.0.4``;
    - numbers printed as C++ streams print a double, six significant digits (``7537.69``,
      ``1.23457e+06``): past a million tokens the counters lose resolution;
    - ``requests_processing`` is the busy slots (`running`) and ``requests_deferred`` the
      requests waiting for one (`waiting`): the real server under a held load shows exactly
      that (slots busy, the rest deferred).

    Emulated differently, on purpose:

    - ``tokens_predicted_total`` (and ``n_decode_total``) advance smoothly at
      `tokens_per_second`; the real server adds a request's tokens when the request ends, so its
      rate() moves in steps (tests/integration/test_llamacpp_prometheus.py measures that; the
      simulator's engine_metrics models it). Smooth counters make the rates these tests check
      exact at any scrape time;
    - the throughput gauges ``predicted_tokens_seconds`` / ``prompt_tokens_seconds`` show the set
      rates; the real ones average the work finished since the previous scrape (every scrape
      resets them);
    - ``n_busy_slots_per_decode`` is `running`; the real one averages busy slots per decode
      call since the server started;
    - ``n_tokens_max``, the cached-prompt and speculative-decoding counters stay 0 (nothing
      scaler reads).
    """

    content_type = CONTENT_TYPE_LLAMACPP

    def _apply_rates(self, truth: GroundTruth) -> None:
        self._counter("llamacpp:tokens_predicted_total").set_rate(truth.tokens_per_second)
        self._counter("llamacpp:prompt_tokens_total").set_rate(truth.prompt_tokens_per_second)
        self._counter("llamacpp:n_decode_total").set_rate(truth.tokens_per_second)
        busy = 1.0 if truth.running > 0 else 0.0
        self._counter("llamacpp:tokens_predicted_seconds_total").set_rate(busy)
        self._counter("llamacpp:prompt_seconds_total").set_rate(
            busy if truth.prompt_tokens_per_second > 0 else 0.0
        )

    def _samples(self) -> list[tuple[str, str, str, list[tuple[Mapping[str, str], float]]]]:
        truth = self._truth
        gauges = {
            "llamacpp:prompt_tokens_seconds": truth.prompt_tokens_per_second,
            "llamacpp:predicted_tokens_seconds": truth.tokens_per_second,
            "llamacpp:requests_processing": truth.running,
            "llamacpp:requests_deferred": truth.waiting,
            "llamacpp:n_busy_slots_per_decode": truth.running,
        }
        no_labels: Mapping[str, str] = {}
        samples = []
        for name, kind, help_text in LLAMACPP_SERIES:
            if name in gauges:
                value = gauges[name]
            elif name in self._counters:
                value = self._counters[name].value()
            else:
                value = 0.0
            samples.append((name, kind, help_text, [(no_labels, value)]))
        return samples

    def _number(self, value: float) -> str:
        # llama-server writes doubles with `ostream << value`: %g with 6 significant digits.
        return format(value, "g") if math.isfinite(value) else _number(value)


class StaticExporter(ExpositionServer):
    """Series whose values the test sets directly, e.g. the activator's pending count and
    forwarded counter, or kube-state-metrics' replica gauges. Gauges are untyped; a series
    given a rate (`set_rate`) is a counter advancing against the clock."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], float | _Counter] = {}

    def set_value(self, name: str, value: float, **labels: str) -> None:
        """Set (or add) the series `name{labels}` to `value`."""
        with self._lock:
            self._series[(name, tuple(sorted(labels.items())))] = value

    def set_rate(self, name: str, per_second: float, **labels: str) -> None:
        """Make `name{labels}` a counter advancing at `per_second` (continuing its value)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            current = self._series.get(key)
            if not isinstance(current, _Counter):
                current = _Counter(self._clock, current or 0.0)
                self._series[key] = current
            current.set_rate(per_second)

    def remove(self, name: str, **labels: str) -> None:
        """Stop exporting `name{labels}` (Prometheus marks it stale on the next scrape)."""
        with self._lock:
            self._series.pop((name, tuple(sorted(labels.items()))), None)

    def _samples(self) -> list[tuple[str, str, str, list[tuple[Mapping[str, str], float]]]]:
        by_name: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        kinds: dict[str, str] = {}
        for (name, labels), value in sorted(self._series.items(), key=lambda item: item[0]):
            number = value.value() if isinstance(value, _Counter) else value
            by_name.setdefault(name, []).append((dict(labels), number))
            kinds[name] = "counter" if isinstance(value, _Counter) else "untyped"
        return [(name, kinds[name], "Set by the test.", series) for name, series in by_name.items()]


def _apply(fault: Fault, value: float) -> float:
    if fault is Fault.NAN:
        return math.nan
    if fault is Fault.INF:
        return math.inf
    if fault is Fault.NEGATIVE:
        return -abs(value) - 1.0
    return value


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"
