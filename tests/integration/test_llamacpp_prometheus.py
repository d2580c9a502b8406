"""PrometheusSource against a real Prometheus scraping real llama-servers under a known load.

Two real servers (tiny model, 2 slots, 1 thread), each its own model, and the real activator
in front of both, its /metrics scraped too (llama.cpp has no request counter: the
activator's forwarded counter is the request rate):

| model       | load, all through the activator        | what the source must read          |
|-------------|-----------------------------------------|------------------------------------|
| busy-llama  | 5 long streamed requests (none ends)    | queue 3, in-flight 5, tokens/s 0   |
| paced-llama | one 8-token request every 1/8 s         | 8 requests/s, 64 tokens/s          |

busy-llama shows what the emulator does not: llama-server adds a request's tokens to
``tokens_predicted_total`` when the request ends, so a server busy with long generations
reads 0 tokens/s until they end (queue depth and in-flight are what scale it meanwhile).

Budget: ~20 s (Prometheus discovers new targets after ~5 s, then the 10 s window fills); one
core busy generating meanwhile.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import pytest
from yarl import URL

from scaler.core import ModelPolicy, Signal
from scaler.sources import PrometheusSource
from tests.activator.model_server import running_activator
from tests.builders import make_policy
from tests.integration.llama_load import CompletionLoad
from tests.integration.llama_server import LlamaServers
from tests.integration.prometheus import PrometheusServer, ScrapeTarget

pytestmark = [pytest.mark.prometheus, pytest.mark.llamacpp]

WINDOW = "10s"  # 10 scrapes at 1 s: each 8-token answer is 1/80 of the window's increase
BUSY, PACED = "busy-llama", "paced-llama"
HELD = 5  # requests on busy-llama's 2 slots
PER_SECOND, TOKENS = 8.0, 8


def llamacpp_policy(model: str, **changes: Any) -> ModelPolicy:
    """A llama.cpp policy selecting namespace cortex and `model`."""
    return make_policy(
        "tinyllama",
        model=model,
        matchers=['namespace="cortex"', f'model="{model}"'],
        target={"namespace": "cortex", "deployment": model},
        **changes,
    )


def close(actual: float, expected: float) -> bool:
    """A rate read through Prometheus within 5 % of the one sent (each answer is 1/80 of
    the window's increase, and rate() extrapolates to the window's edges)."""
    return math.isclose(actual, expected, rel_tol=0.05)


async def test_signals_equal_the_load_the_servers_were_sent(
    prometheus: PrometheusServer, llama_server: LlamaServers
) -> None:
    """Queue depth and in-flight are the requests waiting for and holding busy-llama's slots;
    request rate and tokens/s are what was sent to paced-llama (every answer had its 8
    tokens); busy-llama's tokens/s is 0 as none of its requests has ended."""
    busy, paced = llama_server(), llama_server()
    policies = [llamacpp_policy(BUSY), llamacpp_policy(PACED)]
    upstreams = {BUSY: URL(busy.url), PACED: URL(paced.url)}
    async with (
        running_activator(policies, upstreams=upstreams) as (_activator, url),
        aiohttp.ClientSession() as session,
        CompletionLoad(session, url.with_path(f"/{BUSY}/v1/completions")) as busy_load,
        CompletionLoad(session, url.with_path(f"/{PACED}/v1/completions")) as paced_load,
    ):
        await asyncio.to_thread(
            prometheus.reload,
            [
                ScrapeTarget(busy.address, {"namespace": "cortex", "model": BUSY}),
                ScrapeTarget(paced.address, {"namespace": "cortex", "model": PACED}),
                ScrapeTarget(f"{url.host}:{url.port}", {"namespace": "scaler"}, job="activator"),
            ],
        )
        held = busy_load.hold(HELD)
        paced_load.paced(PER_SECOND, TOKENS)
        # The load started before the targets' first scrape: once the window is full of
        # scrapes, it holds only scrapes taken under load.
        for series in (
            f'llamacpp:tokens_predicted_total{{model="{PACED}"}}',
            f'scaler_activator_forwarded_total{{model="{PACED}"}}',
            f'llamacpp:tokens_predicted_total{{model="{BUSY}"}}',
        ):
            await prometheus.wait_for_async(
                f"count_over_time({series}[{WINDOW}]) >= 10", timeout=60
            )
        await prometheus.wait_for_async(
            f'llamacpp:requests_deferred{{model="{BUSY}"}} == {HELD - 2}', timeout=30
        )
        async with PrometheusSource(url=prometheus.url, window=WINDOW, timeout=5.0) as source:
            reading = await source.read(policies)
        assert not any(task.done() for task in held), "a long request ended: raise its length"

    assert all(stat.error is None for stat in reading.queries)
    assert {a.status for a in paced_load.answers} == {200}
    assert {a.completion_tokens for a in paced_load.answers} == {TOKENS}
    busy_signals = reading.models[BUSY].signals
    assert busy_signals[Signal.QUEUE_DEPTH] == HELD - 2
    assert busy_signals[Signal.INFLIGHT_REQUESTS] == HELD
    assert busy_signals[Signal.TOKENS_PER_SECOND] == 0
    paced_signals = reading.models[PACED].signals
    assert close(paced_signals[Signal.REQUEST_RATE], PER_SECOND)
    assert close(paced_signals[Signal.TOKENS_PER_SECOND], PER_SECOND * TOKENS)
