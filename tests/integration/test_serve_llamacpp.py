"""`scaler serve` end to end with a real llama.cpp model next to an emulated vLLM one.

tinyllama is a real ``llama-server`` (tiny model, 2 slots) behind the real activator, both
scraped by a real Prometheus; mistral-7b is the vLLM emulator (no vLLM runs here). The adapter
is wired as `scaler serve` wires it (tests/integration/serving.py), on the Kubernetes API
stand-in with one ready replica of each. Five long requests held open on tinyllama fill its
2 slots and leave 3 deferred; the HPA, reading through the official client, must get those
numbers and the decision they lead to.

The policies decide by their per-signal targets alone (no SLO sizing), so the expected
replica counts follow from the targets: tinyllama queue 3 / 2 per replica and in-flight
5 / 4 per replica give 2; mistral-7b's small load stays at its minimum, 1.

Budget: ~20 s (target discovery ~5 s, the 10 s rate window).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.activator.model_server import running_activator
from tests.builders import make_target_policy
from tests.integration.llama_load import CompletionLoad
from tests.integration.llama_server import LlamaServers
from tests.integration.model_servers import VllmServer
from tests.integration.prometheus import PrometheusServer, ScrapeTarget
from tests.integration.serving import NAMESPACE, quantity, serve_models

pytestmark = [pytest.mark.prometheus, pytest.mark.llamacpp]

TINY, MISTRAL = "tinyllama", "mistral-7b"
WINDOW = "10s"  # 10 scrapes: the emulator's rate stays exact with a core busy generating
HELD = 5


async def test_the_hpa_reads_the_real_servers_load_and_the_emulated_one(
    prometheus: PrometheusServer, llama_server: LlamaServers, tmp_path: Path
) -> None:
    """Served per model: tinyllama queue 3, in-flight 5, 0 tokens/s (nothing ended), desired
    2; mistral-7b its emulator's ground truth, desired 1; nothing scaled by the adapter itself
    (always-on models are the HPA's to scale)."""
    policies = [make_target_policy(TINY), make_target_policy(MISTRAL)]
    server = llama_server()
    with VllmServer(model_name="mistralai/Mistral-7B-Instruct-v0.3") as vllm:
        truth = vllm.set(waiting=0, running=1, tokens_per_second=6, requests_per_second=0.1)
        async with (
            running_activator(policies, upstreams={TINY: URL(server.url)}) as (_, url),
            aiohttp.ClientSession() as session,
            CompletionLoad(session, url.with_path(f"/{TINY}/v1/completions")) as load,
        ):
            await asyncio.to_thread(
                prometheus.reload,
                [
                    ScrapeTarget(server.address, {"namespace": NAMESPACE, "model": TINY}),
                    ScrapeTarget(vllm.address, {"namespace": NAMESPACE, "model": MISTRAL}),
                    ScrapeTarget(f"{url.host}:{url.port}", {"namespace": "scaler"}, "activator"),
                ],
            )
            held = load.hold(HELD)
            for series in (
                f'llamacpp:tokens_predicted_total{{model="{TINY}"}}',
                f'vllm:generation_tokens_total{{model="{MISTRAL}"}}',
                f'scaler_activator_forwarded_total{{model="{TINY}"}}',
            ):
                await prometheus.wait_for_async(
                    f"count_over_time({series}[{WINDOW}]) >= 10", timeout=60
                )
            await prometheus.wait_for_async(
                f'llamacpp:requests_deferred{{model="{TINY}"}} == {HELD - 2}', timeout=30
            )
            async with serve_models(
                prometheus.url,
                policies,
                tmp_path,
                replicas={TINY: 1, MISTRAL: 1},
                window=WINDOW,
            ) as running:
                await running.tick()
                served = {
                    (model, metric): await running.external(f"scaler-{metric}", model)
                    for model in (TINY, MISTRAL)
                    for metric in (
                        "queue-depth",
                        "inflight-requests",
                        "tokens-per-second",
                        "desired-replicas",
                    )
                }
                writes = running.standin.writes("deployments", "scale")
            assert not any(task.done() for task in held), "a long request ended: raise its length"

    tokens = quantity(served.pop((MISTRAL, "tokens-per-second")))
    assert served == {
        (TINY, "queue-depth"): str(HELD - 2),
        (TINY, "inflight-requests"): str(HELD),
        (TINY, "tokens-per-second"): "0",
        (TINY, "desired-replicas"): "2",
        (MISTRAL, "queue-depth"): "0",
        (MISTRAL, "inflight-requests"): f"{truth.inflight:g}",
        (MISTRAL, "desired-replicas"): "1",
    }
    # Scrapes are stamped when they start and the emulator's counter read when they arrive:
    # with a core busy generating they drift apart by up to a few 100 ms.
    assert math.isclose(tokens, truth.tokens_per_second, rel_tol=0.1)
    assert writes == []
