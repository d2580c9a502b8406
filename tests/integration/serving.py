"""`scaler serve` wired as the command does, for end-to-end tests on a real Prometheus.

`serve_models()` seeds the Kubernetes API stand-in (tests/live/kube_standin.py: three 96 GiB
nodes, the model Deployments, the front-proxy ConfigMap), builds the adapter exactly as
`scaler serve` does (`build_adapter` + `serving`: the real PrometheusSource, loop, elector,
actuator and API server) and yields a `Running`: ticks are the test's, on an injected clock;
external metrics are read with the official kubernetes client over TLS with a front-proxy
client certificate, as the HPA's requests arrive through the aggregator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import trustme

from scaler.api.auth import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from scaler.api.server import ApiEndpoint
from scaler.core import ModelPolicy
from scaler.live.serve import Adapter, ServeOptions, build_adapter, serving
from scaler.sources import PrometheusSource
from tests.live.kube_standin import KubeStandIn

NAMESPACE = "cortex"


class ShiftedClock:
    """Real time plus an offset the test can advance (to pass the idle period)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


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

    def replicas(self, model: str) -> int:
        """spec.replicas of `model`'s Deployment in the stand-in."""
        value = self.standin.deployment(NAMESPACE, model)["spec"]["replicas"]
        assert isinstance(value, int)
        return value

    async def external(self, metric: str, model: str) -> str:
        """The served Quantity of `metric` for `model`, read by the official client."""
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
                label_selector=f"model={model}",
            )

        try:
            body = await asyncio.to_thread(read)
        finally:
            await asyncio.to_thread(client.close)
        value = body["items"][0]["value"]
        assert isinstance(value, str)
        return value


def quantity(served: str) -> float:
    """A served Quantity ("4", "3998m") as a number."""
    return float(served[:-1]) / 1000 if served.endswith("m") else float(served)


@contextlib.asynccontextmanager
async def serve_models(
    prometheus_url: str,
    policies: Sequence[ModelPolicy],
    tmp_path: Path,
    *,
    replicas: Mapping[str, int],
    window: str,
) -> AsyncIterator[Running]:
    """Stand-in Kubernetes (a Deployment per model, at `replicas`, all ready) + the serve
    wiring on `prometheus_url` with rate `window`, the API listening; ticks are the
    caller's."""
    front_proxy, serving_ca = trustme.CA(), trustme.CA()
    standin = KubeStandIn()
    for i in (1, 2, 3):
        standin.add_node(f"ms01-{i}", memory="96Gi")
    for model, count in replicas.items():
        standin.add_deployment(NAMESPACE, model, replicas=count, labels={"app": model})
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
        async with PrometheusSource(url=prometheus_url, window=window, timeout=2.0) as src:
            adapter = await build_adapter(
                options=options,
                policies=list(policies),
                source=src,
                api_client=standin.api_client(),
                clock=clock,
            )
            async with serving(adapter, options=options, clock=clock) as endpoint:
                yield Running(adapter, endpoint, standin, clock, ca_file, client_cert)
    finally:
        await standin.close()
