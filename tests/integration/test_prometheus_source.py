"""PrometheusSource against a real Prometheus scraping emulated vLLM and llama.cpp servers.

One Prometheus and one set of emulators serve the whole module (budget: ~15 s of setup, the
tests themselves a few seconds). Each model below has its own ground truth and its own `model`
label, so tests do not see each other's series:

| model            | exporter                      | notes                                    |
|------------------|-------------------------------|------------------------------------------|
| mistral-7b       | vLLM, colon names             | ns cortex; kube-state-metrics replicas   |
| vllm-underscore  | vLLM, underscore names        | ns cortex                                |
| lab-7b           | vLLM, colon names             | ns lab (different non-model matchers)    |
| tinyllama        | llama.cpp, colon names        | + activator pending 1, forwarded 0.5/s   |
| deepseek-coder   | llama.cpp, underscore names   | + activator forwarded 0.25/s             |
| mixtral-8x7b     | none (scaled to zero)         | activator pending 2                      |
| nan-model        | vLLM, every value NaN         | activator pending 0                      |
| garbage-model    | vLLM, unparseable body        | scrape fails: up == 0; pending 0         |
| negative-model   | llama.cpp, negative values    | activator pending 0                      |
| ghost            | nothing at all                |                                          |
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from scaler.core import Engine, ModelPolicy, Signal
from scaler.sources import PrometheusSource
from scaler.sources.prometheus import ReplicaCountsUnavailableError
from scaler.sources.templates import DEFAULT_TEMPLATES, render_combined
from tests.builders import make_policy
from tests.integration.model_servers import (
    ExpositionServer,
    Fault,
    GroundTruth,
    LlamaCppServer,
    Spelling,
    StaticExporter,
    VllmServer,
)
from tests.integration.prometheus import (
    PrometheusQueryError,
    PrometheusServer,
    ScrapeTarget,
    create_blocks,
)

pytestmark = pytest.mark.prometheus

WINDOW = "5s"  # >= 4 scrapes at 1 s
PENDING = "scaler_activator_pending_requests"
FORWARDED = "scaler_activator_forwarded_total"


def vllm_policy(model: str, namespace: str = "cortex", **changes: Any) -> ModelPolicy:
    """A vLLM policy selecting `namespace` and `model`, targeting a Deployment named `model`."""
    return make_policy(
        "mistral-7b",
        model=model,
        matchers=[f'namespace="{namespace}"', f'model="{model}"'],
        target={"namespace": namespace, "deployment": model},
        **changes,
    )


def llamacpp_policy(model: str, **changes: Any) -> ModelPolicy:
    """A llama.cpp always-on policy selecting namespace cortex and `model`."""
    return make_policy(
        "tinyllama",
        model=model,
        matchers=['namespace="cortex"', f'model="{model}"'],
        target={"namespace": "cortex", "deployment": model},
        **changes,
    )


@dataclass
class World:
    """The module's Prometheus, emulators and ground truth."""

    prometheus: PrometheusServer
    engines: dict[str, ExpositionServer]
    truth: dict[str, GroundTruth]
    activator: StaticExporter


@pytest.fixture(scope="module")
def world(prometheus: PrometheusServer) -> Iterator[World]:
    """Start every emulator, point Prometheus at them, wait until rate windows are full."""
    engines: dict[str, ExpositionServer] = {
        "mistral-7b": VllmServer(model_name="mistralai/Mistral-7B-Instruct-v0.3"),
        "vllm-underscore": VllmServer(model_name="other", spelling=Spelling.UNDERSCORE),
        "lab-7b": VllmServer(model_name="lab"),
        "tinyllama": LlamaCppServer(),
        "deepseek-coder": LlamaCppServer(spelling=Spelling.UNDERSCORE),
        "nan-model": VllmServer(model_name="nan"),
        "garbage-model": VllmServer(model_name="garbage"),
        "negative-model": LlamaCppServer(),
    }
    activator = StaticExporter()
    ksm = StaticExporter()
    for server in (*engines.values(), activator, ksm):
        server.start()
    truth = {
        "mistral-7b": _set(engines["mistral-7b"], waiting=3, running=5, tokens=40, requests=2),
        "vllm-underscore": _set(
            engines["vllm-underscore"], waiting=4, running=1, tokens=25, requests=1
        ),
        "lab-7b": _set(engines["lab-7b"], waiting=6, running=0, tokens=0, requests=0),
        "tinyllama": _set(engines["tinyllama"], waiting=2, running=3, tokens=30, requests=0),
        "deepseek-coder": _set(
            engines["deepseek-coder"], waiting=1, running=2, tokens=12, requests=0
        ),
        "nan-model": _set(engines["nan-model"], waiting=1, running=1, tokens=1, requests=1),
        "garbage-model": _set(engines["garbage-model"], waiting=1, running=1, tokens=1, requests=1),
        "negative-model": _set(
            engines["negative-model"], waiting=1, running=1, tokens=1, requests=0
        ),
    }
    engines["nan-model"].set_fault(Fault.NAN)
    engines["garbage-model"].set_fault(Fault.GARBAGE)
    engines["negative-model"].set_fault(Fault.NEGATIVE)
    activator.set_value(PENDING, 1, model="tinyllama")
    activator.set_value(PENDING, 2, model="mixtral-8x7b")
    # The activator exports 0 for every model it routes: broken engines must not read as 0.
    for broken in ("nan-model", "garbage-model", "negative-model"):
        activator.set_value(PENDING, 0, model=broken)
    activator.set_rate(FORWARDED, 0.5, model="tinyllama")
    activator.set_rate(FORWARDED, 0.25, model="deepseek-coder")
    ksm.set_value("kube_deployment_spec_replicas", 3, namespace="cortex", deployment="mistral-7b")
    ksm.set_value(
        "kube_deployment_status_replicas_ready", 2, namespace="cortex", deployment="mistral-7b"
    )
    targets = [
        ScrapeTarget(
            server.address,
            {"namespace": "lab" if model == "lab-7b" else "cortex", "model": model},
        )
        for model, server in engines.items()
    ]
    # The activator runs in its own namespace: only its exported `model` label matches.
    targets.append(ScrapeTarget(activator.address, {"namespace": "scaler"}, job="activator"))
    targets.append(ScrapeTarget(ksm.address, {}, job="kube-state-metrics"))
    try:
        prometheus.reload(targets)
        # Rates are exact once the window holds a full set of scrapes of every target.
        for series in (
            'llamacpp_tokens_predicted_total{model="deepseek-coder"}',
            f'{FORWARDED}{{model="tinyllama"}}',
            'vllm:generation_tokens_total{model="mistral-7b"}',
            'vllm_generation_tokens_total{model="vllm-underscore"}',
        ):
            prometheus.wait_for(f"count_over_time({series}[{WINDOW}]) >= 5", timeout=30)
        yield World(prometheus, engines, truth, activator)
    finally:
        for server in (*engines.values(), activator, ksm):
            server.stop()


def _set(
    server: ExpositionServer, *, waiting: float, running: float, tokens: float, requests: float
) -> GroundTruth:
    assert isinstance(server, VllmServer | LlamaCppServer)
    return server.set(
        waiting=waiting, running=running, tokens_per_second=tokens, requests_per_second=requests
    )


@pytest.fixture
async def source(world: World) -> AsyncIterator[PrometheusSource]:
    """A source on the module's Prometheus with the test window."""
    async with PrometheusSource(url=world.prometheus.url, window=WINDOW, timeout=5.0) as src:
        yield src


def close(actual: float, expected: float) -> bool:
    """Rates from Prometheus match the emulator's within 5 % (scrape-time jitter)."""
    return math.isclose(actual, expected, rel_tol=0.05, abs_tol=1e-9)


RATE_SETTLE_SECONDS = 15.0
"""How long the rate checks re-read before they fail. Prometheus stamps a sample with the
scrape's start, the emulator values its counter when it renders: on a loaded 2-core machine
a render late by most of a second put one window's tokens/s 15 % low (25.6 for 30, in CI).
A few windows later the rate is exact again; a wrong rate never is."""


async def assert_rates(
    source: PrometheusSource, policy: ModelPolicy, expected: dict[Signal, float]
) -> None:
    """Every rate in `expected` is `close` to what the source reads for `policy`, re-read
    once a second until it is or RATE_SETTLE_SECONDS have passed (then the last read fails)."""
    deadline = time.monotonic() + RATE_SETTLE_SECONDS
    while True:
        reading = await source.read([policy])
        signals = reading.models[policy.model].signals
        settled = all(close(signals.get(s, math.nan), v) for s, v in expected.items())
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    for signal, value in expected.items():
        assert close(signals.get(signal, math.nan), value), (policy.model, signal, signals)


async def test_every_default_template_parses_in_prometheus(world: World) -> None:
    """Each engine's rendered default query, for one model and for several, runs (no HTTP 400)."""
    for engine, templates in DEFAULT_TEMPLATES.items():
        for signal, template in templates.items():
            for models in (['model="a"'], ['model=~"a|b|c"']):
                query = render_combined(
                    template,
                    matchers=",".join(['namespace="cortex"', *models]),
                    model_matchers=models[0],
                    window="1m",
                    model_label="model",
                )
                try:
                    await asyncio.to_thread(world.prometheus.check_query, query)
                except PrometheusQueryError as exc:
                    pytest.fail(f"{engine} {signal}: {exc}")


async def test_vllm_signals_match_ground_truth(world: World, source: PrometheusSource) -> None:
    """vLLM (colon names): queue, in-flight, tokens/s and request rate equal the emulator's."""
    truth = world.truth["mistral-7b"]
    policy = vllm_policy("mistral-7b")
    reading = await source.read([policy])
    signals = reading.models["mistral-7b"].signals
    assert signals[Signal.QUEUE_DEPTH] == truth.waiting
    assert signals[Signal.INFLIGHT_REQUESTS] == truth.inflight
    await assert_rates(
        source,
        policy,
        {
            Signal.TOKENS_PER_SECOND: truth.tokens_per_second,
            Signal.REQUEST_RATE: truth.requests_per_second,
        },
    )
    assert all(stat.error is None for stat in reading.queries)


async def test_vllm_underscore_spelling_is_read(world: World, source: PrometheusSource) -> None:
    """Series stored as vllm_num_requests_waiting etc. are read by the same templates."""
    truth = world.truth["vllm-underscore"]
    policy = vllm_policy("vllm-underscore")
    reading = await source.read([policy])
    signals = reading.models["vllm-underscore"].signals
    assert signals[Signal.QUEUE_DEPTH] == truth.waiting
    assert signals[Signal.INFLIGHT_REQUESTS] == truth.inflight
    await assert_rates(
        source,
        policy,
        {
            Signal.TOKENS_PER_SECOND: truth.tokens_per_second,
            Signal.REQUEST_RATE: truth.requests_per_second,
        },
    )


async def test_llamacpp_signals_match_ground_truth(world: World, source: PrometheusSource) -> None:
    """llama.cpp (underscore names, no activator pending): deferred, processing+deferred,
    tokens/s; the request rate is the activator's forwarded rate."""
    truth = world.truth["deepseek-coder"]
    policy = llamacpp_policy("deepseek-coder")
    reading = await source.read([policy])
    signals = reading.models["deepseek-coder"].signals
    assert signals[Signal.QUEUE_DEPTH] == truth.waiting
    assert signals[Signal.INFLIGHT_REQUESTS] == truth.inflight
    await assert_rates(
        source,
        policy,
        {Signal.TOKENS_PER_SECOND: truth.tokens_per_second, Signal.REQUEST_RATE: 0.25},
    )


async def test_activator_pending_is_added_to_queue_and_inflight(
    world: World, source: PrometheusSource
) -> None:
    """Requests held by the activator count in queue depth and in-flight of a warm model."""
    truth = world.truth["tinyllama"]
    policy = llamacpp_policy("tinyllama")
    reading = await source.read([policy])
    signals = reading.models["tinyllama"].signals
    assert signals[Signal.QUEUE_DEPTH] == truth.waiting + 1
    assert signals[Signal.INFLIGHT_REQUESTS] == truth.inflight + 1
    await assert_rates(
        source,
        policy,
        {Signal.TOKENS_PER_SECOND: truth.tokens_per_second, Signal.REQUEST_RATE: 0.5},
    )


async def test_model_at_zero_is_woken_by_pending_requests(
    world: World, source: PrometheusSource
) -> None:
    """A model with no pods: queue and in-flight are the held requests; engine rates missing."""
    policy = make_policy("mixtral-8x7b")
    reading = await source.read([policy])
    signals = reading.models["mixtral-8x7b"].signals
    assert signals == {Signal.QUEUE_DEPTH: 2.0, Signal.INFLIGHT_REQUESTS: 2.0}


async def test_model_without_series_has_every_signal_missing(
    world: World, source: PrometheusSource
) -> None:
    """No series is missing data, never 0: the reading exists but has no signal."""
    reading = await source.read([vllm_policy("ghost"), llamacpp_policy("ghost-llama")])
    assert reading.models["ghost"].signals == {}
    assert reading.models["ghost"].sample_time is None
    assert reading.models["ghost-llama"].signals == {}
    assert all(stat.error is None for stat in reading.queries)


@pytest.mark.parametrize("model", ["nan-model", "garbage-model", "negative-model"])
async def test_broken_values_are_missing(
    world: World, source: PrometheusSource, model: str
) -> None:
    """NaN, negative and unscrapeable exporters give missing signals: not the value, and not
    the activator's 0 pending either (their scrape targets exist, so they are not at zero)."""
    policy = llamacpp_policy(model) if model == "negative-model" else vllm_policy(model)
    reading = await source.read([policy])
    assert reading.models[model].signals == {}


async def test_batch_reads_many_models_in_one_query_per_signal_per_engine(
    world: World, source: PrometheusSource
) -> None:
    """Models of one engine share one query per signal: 4 or 40 policies, 8 queries, and
    Prometheus sees exactly those; batched values equal the one-by-one values."""
    small = [
        vllm_policy("mistral-7b"),
        vllm_policy("vllm-underscore"),
        llamacpp_policy("tinyllama"),
        llamacpp_policy("deepseek-coder"),
    ]
    ghosts = [vllm_policy(f"ghost-{i}") for i in range(18)]
    ghosts += [llamacpp_policy(f"ghost-llama-{i}") for i in range(18)]
    before = await asyncio.to_thread(world.prometheus.query_count)
    reading_small = await source.read(small)
    reading_large = await source.read(small + ghosts)
    after = await asyncio.to_thread(world.prometheus.query_count)

    assert len(reading_small.queries) == len(reading_large.queries) == 2 * len(Signal)
    assert {(q.engine, q.signal) for q in reading_large.queries} == {
        (engine, signal) for engine in Engine for signal in Signal
    }
    assert after - before == 2 * 2 * len(Signal)
    for model in ("mistral-7b", "vllm-underscore", "tinyllama", "deepseek-coder"):
        alone = await source.read([p for p in small if p.model == model])
        assert set(reading_large.models[model].signals) == set(alone.models[model].signals)
        assert (
            reading_large.models[model].signals[Signal.QUEUE_DEPTH]
            == (alone.models[model].signals[Signal.QUEUE_DEPTH])
        )


async def test_policies_with_different_matchers_get_one_query_per_matcher_set(
    world: World, source: PrometheusSource
) -> None:
    """A namespace=lab policy next to namespace=cortex ones: one extra query per signal, and
    each model still reads its own series."""
    policies = [vllm_policy("mistral-7b"), vllm_policy("lab-7b", namespace="lab")]
    reading = await source.read(policies)
    assert len(reading.queries) == 2 * len(Signal)
    assert reading.models["lab-7b"].signals[Signal.QUEUE_DEPTH] == world.truth["lab-7b"].waiting
    assert reading.models["mistral-7b"].signals[Signal.QUEUE_DEPTH] == (
        world.truth["mistral-7b"].waiting
    )


async def test_overridden_template_runs_per_policy(world: World, source: PrometheusSource) -> None:
    """A policy's `queries` override replaces that signal's query for that policy only."""
    override = {"queue_depth": "sum by ({model_label}) (vllm:num_requests_running{{matchers}})"}
    policies = [vllm_policy("mistral-7b", queries=override), vllm_policy("vllm-underscore")]
    reading = await source.read(policies)
    assert reading.models["mistral-7b"].signals[Signal.QUEUE_DEPTH] == (
        world.truth["mistral-7b"].running
    )
    assert reading.models["vllm-underscore"].signals[Signal.QUEUE_DEPTH] == (
        world.truth["vllm-underscore"].waiting
    )
    queue_queries = [q for q in reading.queries if q.signal is Signal.QUEUE_DEPTH]
    assert len(queue_queries) == 2


async def test_override_that_does_not_parse_is_a_query_error(
    world: World, source: PrometheusSource
) -> None:
    """An override Prometheus refuses leaves that signal missing with the 400 recorded; the
    model's other signals are still read."""
    policy = vllm_policy("mistral-7b", queries={"queue_depth": "sum by (model) ("})
    reading = await source.read([policy])
    failed = [q for q in reading.queries if q.error is not None]
    assert [q.signal for q in failed] == [Signal.QUEUE_DEPTH]
    assert "400" in (failed[0].error or "")
    assert Signal.QUEUE_DEPTH not in reading.models["mistral-7b"].signals
    assert Signal.INFLIGHT_REQUESTS in reading.models["mistral-7b"].signals


async def test_sample_time_is_a_recent_scrape_time(world: World, source: PrometheusSource) -> None:
    """sample_time is a scrape timestamp: not in the future, and within a few scrapes of now."""
    reading = await source.read([vllm_policy("mistral-7b")])
    sample_time = reading.models["mistral-7b"].sample_time
    assert sample_time is not None
    assert time.time() - 5 < sample_time <= time.time()


async def test_sample_time_is_the_samples_not_the_query_time(tmp_path: Path) -> None:
    """With only a 2-minute-old sample, sample_time is that sample's timestamp."""
    old = int(time.time()) - 120
    create_blocks(
        f'# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{namespace="cortex",'
        f'model="old-7b"}} 4 {old}\n# EOF\n',
        tmp_path / "tsdb",
    )
    server = await asyncio.to_thread(PrometheusServer.start_on_blocks, tmp_path / "tsdb")
    try:
        async with PrometheusSource(url=server.url, window=WINDOW) as src:
            reading = await src.read([vllm_policy("old-7b")])
    finally:
        await asyncio.to_thread(server.stop)
    assert reading.models["old-7b"].sample_time == old
    assert reading.models["old-7b"].signals[Signal.QUEUE_DEPTH] == 4


async def test_prometheus_killed_mid_run_gives_errors_not_exceptions(tmp_path: Path) -> None:
    """Prometheus killed between two reads: the first reads the value, the second has every
    signal missing and every query failed, and neither raises."""
    recent = int(time.time()) - 10
    create_blocks(
        f'vllm:num_requests_waiting{{namespace="cortex",model="crash-7b"}} 4 {recent}\n# EOF\n',
        tmp_path / "tsdb",
    )
    server = await asyncio.to_thread(PrometheusServer.start_on_blocks, tmp_path / "tsdb")
    try:
        async with PrometheusSource(url=server.url, window=WINDOW, timeout=2.0) as src:
            before = await src.read([vllm_policy("crash-7b")])
            await asyncio.to_thread(server.kill)
            after = await src.read([vllm_policy("crash-7b")])
    finally:
        await asyncio.to_thread(server.stop)
    assert before.models["crash-7b"].signals[Signal.QUEUE_DEPTH] == 4
    assert after.models["crash-7b"].signals == {}
    assert after.queries
    assert all(q.error for q in after.queries)


async def test_prometheus_down_gives_missing_signals_and_errors() -> None:
    """Nothing listening: no exception, every signal missing, every query has an error."""
    async with PrometheusSource(url="http://127.0.0.1:9", timeout=2.0) as src:
        reading = await src.read([vllm_policy("mistral-7b"), llamacpp_policy("tinyllama")])
    assert reading.models["mistral-7b"].signals == {}
    assert reading.models["tinyllama"].signals == {}
    assert len(reading.queries) == 2 * len(Signal)
    assert all(q.error for q in reading.queries)


async def test_slow_prometheus_times_out_with_an_error() -> None:
    """A Prometheus slower than the timeout: the query fails with "timed out", read returns."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"status": "success", "data": {"result": []}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", stall)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with PrometheusSource(url=f"http://127.0.0.1:{port}", timeout=0.5) as src:
            reading = await src.read([vllm_policy("mistral-7b")])
    finally:
        release.set()
        await runner.cleanup()
    assert reading.models["mistral-7b"].signals == {}
    assert all("timed out" in (q.error or "") for q in reading.queries)
    # The stall lasts until released: only the timeout can have ended each query.
    assert all(q.duration_seconds < 5 for q in reading.queries)


async def test_replica_counts_from_kube_state_metrics_else_targets(
    world: World, source: PrometheusSource
) -> None:
    """KSM gauges win for their Deployment; otherwise scraped targets (ready = up), and a model
    with neither has 0."""
    counts = await source.replica_counts(
        [
            vllm_policy("mistral-7b"),
            llamacpp_policy("tinyllama"),
            vllm_policy("garbage-model"),
            vllm_policy("ghost"),
        ]
    )
    assert (counts["mistral-7b"].current, counts["mistral-7b"].ready) == (3, 2)
    assert (counts["tinyllama"].current, counts["tinyllama"].ready) == (1, 1)
    assert (counts["garbage-model"].current, counts["garbage-model"].ready) == (1, 0)
    assert (counts["ghost"].current, counts["ghost"].ready) == (0, 0)


async def test_replica_counts_unknown_when_prometheus_is_down() -> None:
    """All queries failing is an error (unknown replicas), never 0 replicas."""
    async with PrometheusSource(url="http://127.0.0.1:9", timeout=2.0) as src:
        with pytest.raises(ReplicaCountsUnavailableError, match="every replica query failed"):
            await src.replica_counts([vllm_policy("mistral-7b")])
