"""`scaler serve` end to end: real Prometheus, emulated llama.cpp Mixtral, stand-in Kubernetes.

The parts: a real Prometheus scraping an emulated ``llama-server --metrics`` for Mixtral and
the activator's exporter (pending requests, forwarded counter); the Kubernetes API stand-in
(tests/live/kube_standin.py) holding Mixtral's Deployment at 0 replicas, the nodes and the
front-proxy ConfigMap; and the adapter exactly as `scaler serve` wires it
(`build_adapter` + `serving`: the real PrometheusSource, loop, elector, actuator and API
server), with ticks driven by the test on an injected clock. The external metrics are read
with the official kubernetes client over TLS with a front-proxy client certificate.

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
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import trustme
from structlog.testing import capture_logs

from scaler.api.auth import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from scaler.api.server import ApiEndpoint
from scaler.core import ModelPolicy, Reason
from scaler.live.serve import Adapter, ServeOptions, build_adapter, serving
from scaler.sources import PrometheusSource
from tests.builders import make_policy
from tests.integration.model_servers import LlamaCppServer, StaticExporter
from tests.integration.prometheus import PrometheusServer, ScrapeTarget
from tests.live.kube_standin import KubeStandIn

pytestmark = pytest.mark.prometheus

MIXTRAL = "mixtral-8x7b"
NAMESPACE = "cortex"
WINDOW = "5s"
PENDING = "scaler_activator_pending_requests"
FORWARDED = "scaler_activator_forwarded_total"
TOKENS_PER_SECOND = 4.0  # the emulator's generation rate, constant through the test


class ShiftedClock:
    """Real time plus an offset the test can advance (to pass the idle period)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


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


@dataclass
class Running:
    """The adapter wired as `scaler serve` does, serving, plus what the test needs."""

    adapter: Adapter
    endpoint: ApiEndpoint
    standin: KubeStandIn
    clock: ShiftedClock
    serving_ca: Path
    client_cert: Path

    async def tick(self) -> None:
        """One election step and one control tick."""
        assert self.adapter.elector is not None
        await self.adapter.elector.step()
        await self.adapter.loop.tick()

    def replicas(self) -> int:
        """Mixtral's spec.replicas in the stand-in."""
        value = self.standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"]
        assert isinstance(value, int)
        return value

    async def external(self, metric: str) -> str:
        """The served Quantity of `metric` for Mixtral, read by the official client."""
        config = kubernetes.client.Configuration(host=self.endpoint.url)
        config.ssl_ca_cert = str(self.serving_ca)
        config.cert_file = config.key_file = str(self.client_cert)
        client = kubernetes.client.ApiClient(config)
        client.default_headers["X-Remote-User"] = "system:serviceaccount:kube-system:hpa"
        api = kubernetes.client.CustomObjectsApi(client)

        def read() -> Any:
            return api.list_namespaced_custom_object(
                "external.metrics.k8s.io",
                "v1beta1",
                NAMESPACE,
                metric,
                label_selector=f"model={MIXTRAL}",
            )

        try:
            body = await asyncio.to_thread(read)
        finally:
            await asyncio.to_thread(client.close)
        value = body["items"][0]["value"]
        assert isinstance(value, str)
        return value


@pytest.fixture
def policy() -> ModelPolicy:
    """The shipped Mixtral policy, staleness raised to an hour (see module docstring)."""
    return make_policy("mixtral-8x7b", data={"staleAfterSeconds": 3600})


@contextlib.asynccontextmanager
async def serve_on(
    prometheus_url: str, policy: ModelPolicy, tmp_path: Path
) -> AsyncIterator[Running]:
    """Stand-in Kubernetes (Mixtral at 0) + the serve wiring on `prometheus_url`, the API
    listening; ticks are the caller's."""
    front_proxy, serving_ca = trustme.CA(), trustme.CA()
    standin = KubeStandIn()
    for i in (1, 2, 3):
        standin.add_node(f"ms01-{i}", memory="96Gi")
    standin.add_deployment(NAMESPACE, MIXTRAL, replicas=0, labels={"app": MIXTRAL})
    standin.add_config_map(
        CONFIGMAP_NAMESPACE,
        CONFIGMAP_NAME,
        {
            "requestheader-client-ca-file": front_proxy.cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
        },
    )
    await standin.start()
    client_cert, ca_file = tmp_path / "front-proxy.pem", tmp_path / "serving-ca.pem"
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    front_proxy.issue_cert(
        "front-proxy-client", common_name="front-proxy-client"
    ).private_key_and_cert_chain_pem.write_to_path(str(client_cert))
    leaf = serving_ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    serving_ca.cert_pem.write_to_path(str(ca_file))
    clock = ShiftedClock()
    options = ServeOptions(
        listen="127.0.0.1:0",
        namespace="scaler-system",
        identity="scaler-0",
        tls_cert_file=cert_file,
        tls_private_key_file=key_file,
    )
    try:
        async with PrometheusSource(url=prometheus_url, window=WINDOW, timeout=2.0) as src:
            adapter = await build_adapter(
                options=options,
                policies=[policy],
                source=src,
                api_client=standin.api_client(),
                clock=clock,
            )
            async with serving(adapter, options=options, clock=clock) as endpoint:
                yield Running(adapter, endpoint, standin, clock, ca_file, client_cert)
    finally:
        await standin.close()


@pytest.fixture
async def running(world: World, policy: ModelPolicy, tmp_path: Path) -> AsyncIterator[Running]:
    """The adapter on the module's Prometheus."""
    async with serve_on(world.prometheus.url, policy, tmp_path) as adapter:
        yield adapter


def close(served: str, expected: float) -> bool:
    """A served Quantity ("4", "3998m") within 5 % of `expected` (scrape-time jitter)."""
    value = float(served[:-1]) / 1000 if served.endswith("m") else float(served)
    return math.isclose(value, expected, rel_tol=0.05, abs_tol=1e-3)


async def test_wake_serve_and_idle_to_zero(
    world: World, running: Running, policy: ModelPolicy
) -> None:
    """pending 1 -> scale 0->1; served values = ground truth; idle period -> scale 1->0."""
    await running.tick()
    assert running.replicas() == 0
    assert running.adapter.health.ready

    # A request arrives while Mixtral is at zero: the activator holds it.
    world.activator.set_value(PENDING, 1, model=MIXTRAL)
    await world.prometheus.wait_for_async(f'{PENDING}{{model="{MIXTRAL}"}} == 1', timeout=10)
    await running.tick()
    assert running.replicas() == 1
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
    assert await running.external("scaler-queue-depth") == "0"
    assert await running.external("scaler-inflight-requests") == f"{truth.inflight:g}"
    assert close(await running.external("scaler-tokens-per-second"), TOKENS_PER_SECOND)
    assert await running.external("scaler-desired-replicas") == "1"
    assert running.replicas() == 1

    # Idle: the request finished. The idle period passes on the adapter's clock.
    world.engine.set(running=0)
    await world.prometheus.wait_for_async(
        f'llamacpp:requests_processing{{model="{MIXTRAL}"}} == 0', timeout=10
    )
    await running.tick()
    assert running.replicas() == 1
    rule = policy.scale_to_zero
    assert rule is not None
    running.clock.offset += rule.idle_seconds - 60
    await running.tick()
    assert running.replicas() == 1  # not yet: 60 s of the idle period left
    running.clock.offset += 61
    await running.tick()
    assert running.replicas() == 0
    assert running.standin.events[-1]["reason"] == Reason.SCALE_TO_ZERO.value
    assert await running.external("scaler-desired-replicas") == "0"


async def external_status(running: Running, metric: str) -> int:
    """The HTTP status the official client gets for `metric` (200 when it reads a value)."""
    try:
        await running.external(metric)
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
                assert await running.external("scaler-desired-replicas") == "1"
                for _ in range(4):
                    running.clock.offset += rule.idle_seconds / 2
                    await running.tick()
            assert running.replicas() == 1
            assert await external_status(running, "scaler-queue-depth") == 503
            assert "prometheus_unavailable" in {e["event"] for e in logs}
    finally:
        await asyncio.to_thread(doomed.stop)
