"""`scaler serve` end to end: real Prometheus, emulated llama.cpp Mixtral, stand-in Kubernetes.

The parts: a real Prometheus scraping an emulated ``llama-server --metrics`` for Mixtral and
the activator's exporter (pending requests, forwarded counter); the Kubernetes API stand-in
holding Mixtral's Deployment at 0 replicas; and the adapter exactly as `scaler serve` wires
it (tests/integration/serving.py), with ticks driven by the test on an injected clock. The
emulator serves a steady rate here, which a real llama-server cannot (it counts tokens when
a request ends); test_serve_llamacpp.py runs serve on a real one.

The story: a request held by the activator (pending 1) -> scale 0 -> 1 written; the model
serves (the served values equal the emulator's ground truth); it goes idle; the idle period
passes on the injected clock -> 1 -> 0 written.

The policy is the shipped Mixtral one with ``data.staleAfterSeconds`` raised to an hour: the
test jumps the adapter's clock over the 15-minute idle period while Prometheus' samples keep
real timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
from structlog.testing import capture_logs

from scaler.core import ModelPolicy, Reason
from tests.builders import make_policy
from tests.integration.model_servers import LlamaCppServer, StaticExporter
from tests.integration.prometheus import PrometheusServer, ScrapeTarget
from tests.integration.serving import NAMESPACE, Running, quantity, serve_models

pytestmark = pytest.mark.prometheus

MIXTRAL = "mixtral-8x7b"
WINDOW = "5s"
PENDING = "scaler_activator_pending_requests"
FORWARDED = "scaler_activator_forwarded_total"
TOKENS_PER_SECOND = 4.0  # the emulator's generation rate, constant through the test


@dataclass
class World:
    """The module's emulators and Prometheus."""

    prometheus: PrometheusServer
    engine: LlamaCppServer
    activator: StaticExporter


@pytest.fixture(scope="module")
def world(prometheus: PrometheusServer) -> Iterator[World]:
    """The Mixtral emulator (idle, generating at a constant rate) and the activator exporter,
    scraped until the rate windows are full."""
    engine, activator = LlamaCppServer(), StaticExporter()
    engine.start()
    activator.start()
    engine.set(waiting=0, running=0, tokens_per_second=TOKENS_PER_SECOND)
    activator.set_value(PENDING, 0, model=MIXTRAL)
    activator.set_rate(FORWARDED, 0.0, model=MIXTRAL)
    try:
        prometheus.reload(
            [
                ScrapeTarget(engine.address, {"namespace": NAMESPACE, "model": MIXTRAL}),
                ScrapeTarget(activator.address, {"namespace": "scaler"}, job="activator"),
            ]
        )
        for series in (
            f'llamacpp:tokens_predicted_total{{model="{MIXTRAL}"}}',
            f'{FORWARDED}{{model="{MIXTRAL}"}}',
        ):
            prometheus.wait_for(f"count_over_time({series}[{WINDOW}]) >= 5", timeout=30)
        yield World(prometheus, engine, activator)
    finally:
        engine.stop()
        activator.stop()


@pytest.fixture
def policy() -> ModelPolicy:
    """The shipped Mixtral policy, staleness raised to an hour (see module docstring)."""
    return make_policy("mixtral-8x7b", data={"staleAfterSeconds": 3600})


def serve_on(
    prometheus_url: str, policy: ModelPolicy, tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[Running]:
    """The serve wiring on `prometheus_url` for `policy`, Mixtral's Deployment at 0."""
    return serve_models(prometheus_url, [policy], tmp_path, replicas={MIXTRAL: 0}, window=WINDOW)


@pytest.fixture
async def running(world: World, policy: ModelPolicy, tmp_path: Path) -> AsyncIterator[Running]:
    """The adapter on the module's Prometheus."""
    async with serve_on(world.prometheus.url, policy, tmp_path) as adapter:
        yield adapter


def close(served: str, expected: float) -> bool:
    """A served Quantity ("4", "3998m") within 5 % of `expected` (scrape-time jitter)."""
    return math.isclose(quantity(served), expected, rel_tol=0.05, abs_tol=1e-3)


async def test_wake_serve_and_idle_to_zero(
    world: World, running: Running, policy: ModelPolicy
) -> None:
    """pending 1 -> scale 0->1; served values = ground truth; keep-alive -> scale 1->0."""
    await running.tick()
    assert running.replicas(MIXTRAL) == 0
    assert running.adapter.health.ready

    # A request arrives while Mixtral is at zero: the activator holds it.
    world.activator.set_value(PENDING, 1, model=MIXTRAL)
    await world.prometheus.wait_for_async(f'{PENDING}{{model="{MIXTRAL}"}} == 1', timeout=10)
    await running.tick()
    assert running.replicas(MIXTRAL) == 1
    assert [e["reason"] for e in running.standin.events] == [Reason.SCALE_FROM_ZERO.value]

    # The replica is up and serving the held request: values served equal the ground truth.
    running.standin.set_ready(NAMESPACE, MIXTRAL, 1)
    world.activator.set_value(PENDING, 0, model=MIXTRAL)
    truth = world.engine.set(running=1, waiting=0)
    await world.prometheus.wait_for_async(
        f'llamacpp:requests_processing{{model="{MIXTRAL}"}} == 1'
        f' and on() {PENDING}{{model="{MIXTRAL}"}} == 0',
        timeout=10,
    )
    await running.tick()
    assert await running.external("scaler-queue-depth", MIXTRAL) == "0"
    assert await running.external("scaler-inflight-requests", MIXTRAL) == f"{truth.inflight:g}"
    assert close(await running.external("scaler-tokens-per-second", MIXTRAL), TOKENS_PER_SECOND)
    assert await running.external("scaler-desired-replicas", MIXTRAL) == "1"
    assert running.replicas(MIXTRAL) == 1

    # Idle: the request finished. The idle period passes on the adapter's clock.
    world.engine.set(running=0)
    await world.prometheus.wait_for_async(
        f'llamacpp:requests_processing{{model="{MIXTRAL}"}} == 0', timeout=10
    )
    await running.tick()
    assert running.replicas(MIXTRAL) == 1
    rule = policy.scale_to_zero
    assert rule is not None
    # No idle gap learned yet: the keep-alive is the restart's cost, at most idleSeconds.
    keep_alive = min(rule.idle_seconds, policy.restart_cost_seconds)
    running.clock.offset += keep_alive - 60
    await running.tick()
    assert running.replicas(MIXTRAL) == 1  # not yet: 60 s of the keep-alive left
    running.clock.offset += 61
    await running.tick()
    assert running.replicas(MIXTRAL) == 0
    assert running.standin.events[-1]["reason"] == Reason.SCALE_TO_ZERO.value
    assert await running.external("scaler-desired-replicas", MIXTRAL) == "0"


async def external_status(running: Running, metric: str) -> int:
    """The HTTP status the official client gets for Mixtral's `metric` (200: a value)."""
    try:
        await running.external(metric, MIXTRAL)
    except kubernetes.client.exceptions.ApiException as exc:
        return int(exc.status or 0)
    return 200


async def test_prometheus_down_at_start(tmp_path: Path) -> None:
    """Nothing listens at the Prometheus URL: the adapter stays unready, writes nothing and
    answers 503, and says why in its log."""
    policy = make_policy("mixtral-8x7b")
    async with serve_on("http://127.0.0.1:9", policy, tmp_path) as running:
        with capture_logs() as logs:
            await running.tick()
            await running.tick()
        assert not running.adapter.health.ready
        assert running.standin.writes("deployments", "scale") == []
        assert await external_status(running, "scaler-desired-replicas") == 503
    assert "prometheus_unavailable" in {e["event"] for e in logs}


async def test_prometheus_killed_mid_run(world: World, tmp_path: Path) -> None:
    """A second real Prometheus scraping the idle Mixtral is SIGKILLed while Mixtral runs at 1:
    it is never scaled to zero however long the outage, the last value is served until the
    staleness limit (60 s) and 503 after it."""
    doomed = PrometheusServer()
    await asyncio.to_thread(doomed.start, world.prometheus.targets)
    try:
        await doomed.wait_for_async(
            f'count_over_time({FORWARDED}{{model="{MIXTRAL}"}}[{WINDOW}]) >= 3', timeout=30
        )
        policy = make_policy("mixtral-8x7b")
        rule = policy.scale_to_zero
        assert rule is not None
        async with serve_on(doomed.url, policy, tmp_path) as running:
            running.standin.scale(NAMESPACE, MIXTRAL, 1)  # woken earlier
            running.standin.set_ready(NAMESPACE, MIXTRAL, 1)
            await running.tick()
            state = running.adapter.loop.states[MIXTRAL]
            assert state.idle_since is not None  # idle, with data: the timer runs
            await asyncio.to_thread(doomed.kill)
            with capture_logs() as logs:
                running.clock.offset += 30
                await running.tick()
                assert await running.external("scaler-desired-replicas", MIXTRAL) == "1"
                for _ in range(4):
                    running.clock.offset += rule.idle_seconds / 2
                    await running.tick()
            assert running.replicas(MIXTRAL) == 1
            assert await external_status(running, "scaler-queue-depth") == 503
            assert "prometheus_unavailable" in {e["event"] for e in logs}
    finally:
        await asyncio.to_thread(doomed.stop)
