"""PrometheusSource on answers a real Prometheus never gives but a proxy or a bug might.

A stub /api/v1/query (aiohttp, loopback) answers by the metric name found in the query, so
each test decides what every signal's query returns. The real-Prometheus behaviour is in
tests/integration/test_prometheus_source.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from scaler.core import Signal
from scaler.sources import PrometheusSource
from tests.builders import make_policy

# Substrings that only the llama.cpp queue-depth / tokens-per-second default query contains.
QUEUE = '~"llamacpp:requests_deferred|'
TOKENS = '~"llamacpp:tokens_predicted_total|'

StubServer = Callable[[web.Application], Awaitable[TestServer]]
Answer = dict[str, Any]


def vector(*series: tuple[dict[str, str], str]) -> Answer:
    """A successful instant-vector answer with the given (labels, value string) series."""
    result = [{"metric": labels, "value": [1_800_000_000.0, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


async def stub(aiohttp_server: StubServer, answers: dict[str, Answer | int]) -> str:
    """Start a stub Prometheus: the first key found in the query picks the answer (a dict is
    JSON, an int an error status); no key matches: an empty vector. Returns its URL."""

    async def query(request: web.Request) -> web.Response:
        text = request.query.get("query", "")
        for key, answer in answers.items():
            if key in text:
                if isinstance(answer, int):
                    return web.json_response({"status": "error", "error": "stub"}, status=answer)
                return web.json_response(answer)
        return web.json_response(vector())

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def value(model: str, number: str) -> tuple[dict[str, str], str]:
    """A value series of a batched default query."""
    return ({"model": model, "scaler_series": "value"}, number)


def sample_time(model: str, at: float) -> tuple[dict[str, str], str]:
    """A sample-time series of a batched default query."""
    return ({"model": model, "scaler_series": "sample_time"}, repr(at))


async def test_unparseable_value_is_missing_not_zero(aiohttp_server: StubServer) -> None:
    """A value that is not a number drops that model's signal; other models keep theirs."""
    policies = [make_policy("tinyllama"), make_policy("deepseek-coder")]
    url = await stub(
        aiohttp_server,
        {QUEUE: vector(value("tinyllama", "oops"), value("deepseek-coder", "2"))},
    )
    async with PrometheusSource(url=url) as source:
        reading = await source.read(policies)
    assert Signal.QUEUE_DEPTH not in reading.models["tinyllama"].signals
    assert reading.models["deepseek-coder"].signals[Signal.QUEUE_DEPTH] == 2.0


async def test_series_of_other_models_are_ignored(aiohttp_server: StubServer) -> None:
    """A result series labelled with a model nobody asked for is not attributed to anyone."""
    url = await stub(
        aiohttp_server,
        {QUEUE: vector(value("tinyllama", "1"), value("stranger", "9"))},
    )
    async with PrometheusSource(url=url) as source:
        reading = await source.read([make_policy("tinyllama")])
    assert set(reading.models) == {"tinyllama"}
    assert reading.models["tinyllama"].signals[Signal.QUEUE_DEPTH] == 1.0


async def test_sample_time_is_the_newest_across_signals(aiohttp_server: StubServer) -> None:
    """The model's sample_time is the max of the per-signal sample times."""
    url = await stub(
        aiohttp_server,
        {
            QUEUE: vector(value("tinyllama", "1"), sample_time("tinyllama", 100.5)),
            TOKENS: vector(value("tinyllama", "3"), sample_time("tinyllama", 104.25)),
        },
    )
    async with PrometheusSource(url=url) as source:
        reading = await source.read([make_policy("tinyllama")])
    assert reading.models["tinyllama"].sample_time == 104.25


async def test_error_status_is_recorded_with_its_code(aiohttp_server: StubServer) -> None:
    """An HTTP 503 from Prometheus is that query's error; the other signals are still read."""
    url = await stub(
        aiohttp_server,
        {TOKENS: 503, QUEUE: vector(value("tinyllama", "1"))},
    )
    async with PrometheusSource(url=url) as source:
        reading = await source.read([make_policy("tinyllama")])
    failed = [q for q in reading.queries if q.error is not None]
    assert [q.signal for q in failed] == [Signal.TOKENS_PER_SECOND]
    assert "503" in (failed[0].error or "")
    assert reading.models["tinyllama"].signals[Signal.QUEUE_DEPTH] == 1.0


async def test_malformed_answer_is_an_error(aiohttp_server: StubServer) -> None:
    """A result that is not an instant vector is reported as a failed query, not raised."""
    malformed = {"status": "success", "data": {"resultType": "scalar", "result": "nope"}}
    url = await stub(aiohttp_server, {QUEUE: malformed})
    async with PrometheusSource(url=url) as source:
        reading = await source.read([make_policy("tinyllama")])
    queue = next(q for q in reading.queries if q.signal is Signal.QUEUE_DEPTH)
    assert queue.error is not None
    assert "instant vector" in queue.error


async def test_replica_counts_match_exact_namespace_and_deployment(
    aiohttp_server: StubServer,
) -> None:
    """kube-state-metrics series are matched on the exact (namespace, deployment) pair; a
    model without one falls back to its target count."""
    a = make_policy("mistral-7b", target={"namespace": "ns1", "deployment": "d1"})
    b = make_policy("tinyllama", target={"namespace": "ns2", "deployment": "d2"})
    ksm = vector(
        ({"namespace": "ns1", "deployment": "d1", "scaler_series": "current"}, "3"),
        ({"namespace": "ns1", "deployment": "d1", "scaler_series": "ready"}, "2"),
        # Selected by the namespace × deployment regexes, but the pair is nobody's.
        ({"namespace": "ns1", "deployment": "d2", "scaler_series": "current"}, "7"),
    )
    up = vector(
        ({"model": "tinyllama", "scaler_series": "current"}, "2"),
        ({"model": "tinyllama", "scaler_series": "ready"}, "1"),
        ({"model": "mistral-7b", "scaler_series": "current"}, "1"),
    )
    url = await stub(aiohttp_server, {"kube_deployment_spec_replicas": ksm, "up{": up})
    async with PrometheusSource(url=url) as source:
        counts = await source.replica_counts([a, b])
    assert (counts["mistral-7b"].current, counts["mistral-7b"].ready) == (3, 2)
    assert (counts["tinyllama"].current, counts["tinyllama"].ready) == (2, 1)


async def test_a_trickling_answer_is_cut_at_the_total_deadline_and_recovery_is_at_once(
    aiohttp_server: StubServer,
) -> None:
    """A proxy sending one byte every 0.1 s for 5 s: every query (eight: two engines) fails
    at the 0.5 s deadline, not per read, and leaves nothing running; the read right after,
    once Prometheus answers normally, succeeds."""
    healthy = False

    async def query(request: web.Request) -> web.StreamResponse:
        if healthy:  # llama.cpp's queries answer for tinyllama, vLLM's find nothing
            llamacpp = "llamacpp" in request.query.get("query", "")
            return web.json_response(vector(value("tinyllama", "3")) if llamacpp else vector())
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for _ in range(50):
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app)
    policies = [make_policy("tinyllama"), make_policy("mistral-7b")]
    async with PrometheusSource(url=str(server.make_url("")), timeout=0.5) as source:
        started = time.monotonic()
        trickled = await source.read(policies)
        assert time.monotonic() - started < 2
        assert len(trickled.queries) == 8
        assert all("timed out" in (q.error or "") for q in trickled.queries)
        healthy = True
        recovered = await source.read(policies)
    assert recovered.models["tinyllama"].signals[Signal.QUEUE_DEPTH] == 3.0
    assert all(q.error is None for q in recovered.queries)


def _many_series(count: int) -> bytes:
    return json.dumps(vector(*(value(f"m{i}", "1") for i in range(count)))).encode()


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_answer_over_the_size_limit_is_a_failed_query(
    aiohttp_server: StubServer, chunked: bool
) -> None:
    """An answer larger than max_response_bytes (declared or streamed) fails its query with
    an error naming the limit; the other queries are unaffected."""
    big = _many_series(40_000)  # ~2 MB
    assert len(big) > 1_000_000

    async def query(request: web.Request) -> web.StreamResponse:
        if QUEUE not in request.query.get("query", ""):
            return web.json_response(vector(value("tinyllama", "2")))
        if not chunked:
            return web.Response(body=big, content_type="application/json")
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(big), 65536):
            await response.write(big[start : start + 65536])
        return response

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app)
    url = str(server.make_url(""))
    async with PrometheusSource(url=url, max_response_bytes=1_000_000) as source:
        reading = await source.read([make_policy("tinyllama")])
    queue = next(q for q in reading.queries if q.signal is Signal.QUEUE_DEPTH)
    assert "1000000-byte limit" in (queue.error or "")
    assert reading.models["tinyllama"].signals[Signal.TOKENS_PER_SECOND] == 2.0


async def test_an_answer_with_too_many_series_is_a_failed_query(
    aiohttp_server: StubServer,
) -> None:
    """More series than max_series in one answer: that query fails, saying so."""
    url = await stub(aiohttp_server, {QUEUE: json.loads(_many_series(101))})
    async with PrometheusSource(url=url, max_series=100) as source:
        reading = await source.read([make_policy("tinyllama")])
    queue = next(q for q in reading.queries if q.signal is Signal.QUEUE_DEPTH)
    assert "101 series, over the limit of 100" in (queue.error or "")
    assert Signal.QUEUE_DEPTH not in reading.models["tinyllama"].signals
