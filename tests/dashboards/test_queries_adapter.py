"""Every dashboard query finds data while Prometheus scrapes a running adapter.

The adapter is `scaler serve` in-process (`build_adapter` + `run_adapter`, the code the
command runs): its real Prometheus source reads emulated llama.cpp and vLLM servers through
a real Prometheus, it talks to the Kubernetes API stand-in of the live tests (nodes,
Deployments, pods, the Lease, events), and Prometheus scrapes its /metrics over HTTPS the
way the ServiceMonitor does. The activator side is the activator's own metrics registry
holding one request for Mixtral, which wakes it: the adapter writes scale 0 -> 1, the test
plays the Deployment controller (the replica becomes ready) and the adapter records the
cold start. Then every panel query of every dashboard must return at least one sample, and
the adapter's /status (fetched without a client certificate, as Gatus and Homepage do) must
match its JSON Schema, carry the held request read back through Prometheus, pass every
condition of the shipped Gatus endpoints on /status and fill every field of the Homepage
widget.

The adapter runs without --allow-anonymous, as in the cluster: Prometheus has no front-proxy
client certificate, so the scrape proves /metrics is served without one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jsonschema
import pytest
import trustme

from scaler.activator.metrics import ActivatorMetrics
from scaler.api.auth import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from scaler.api.server import ApiEndpoint
from scaler.api.status import STATUS_PATH, STATUS_SCHEMA
from scaler.core import Engine, ModelClass
from scaler.live.serve import ServeOptions, build_adapter, run_adapter
from scaler.sources import PrometheusSource
from tests.builders import POLICIES
from tests.dashboards.exporters import (
    ClusterExporter,
    RegistryEndpoint,
    model_pods,
    recording_rules_file,
)
from tests.dashboards.panel_queries import QUERIES
from tests.deploy.homelab_configs import (
    gatus_condition_holds,
    gatus_config,
    homepage_value,
    homepage_widgets,
)
from tests.deploy.objects import policies
from tests.integration.model_servers import LlamaCppServer, VllmServer
from tests.integration.prometheus import PrometheusServer, ScrapeTarget, prometheus_binary
from tests.live.kube_standin import KubeStandIn

pytestmark = pytest.mark.prometheus

NODES = ("ms01-1", "ms01-2", "ms01-3")
WAIT_SECONDS = 30.0


class AdapterScrapingPrometheus(PrometheusServer):
    """Scrapes the jobs of `https_targets` over HTTPS without verifying the adapter's
    self-signed certificate (as the ServiceMonitor's tlsConfig.insecureSkipVerify does).
    Jobs are found by target address: the harness may suffix job names."""

    https_targets: frozenset[str] | set[str] = frozenset()

    def _write_config(self) -> None:
        super()._write_config()
        config = json.loads(self._config_path.read_text())
        for job in config["scrape_configs"]:
            addresses = {t for group in job["static_configs"] for t in group["targets"]}
            if addresses & set(self.https_targets):
                job["scheme"] = "https"
                job["tls_config"] = {"insecure_skip_verify": True}
        self._config_path.write_text(json.dumps(config, indent=2))


async def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_SECONDS} s")
        await asyncio.sleep(0.1)


def _seed(standin: KubeStandIn) -> None:
    """Three nodes, the four Deployments (Mixtral asleep), pods for the warm ones."""
    for node in NODES:
        standin.add_node(node, memory="96Gi")
    standin.add_config_map(
        CONFIGMAP_NAMESPACE,
        CONFIGMAP_NAME,
        {
            "requestheader-client-ca-file": trustme.CA().cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
        },
    )
    for policy in policies().values():
        labels = {"app.kubernetes.io/name": policy.target.deployment}
        replicas = 0 if policy.model_class is ModelClass.ON_DEMAND else 1
        standin.add_deployment(
            policy.target.namespace, policy.target.deployment, replicas=replicas, labels=labels
        )
        if replicas:
            standin.add_pod(
                policy.target.namespace, f"{policy.model}-0", labels=labels, node=NODES[0]
            )


async def _status_as_gatus_and_homepage_see_it(endpoint: ApiEndpoint) -> None:
    """Poll /status until the shipped Gatus conditions on it pass, then check the rest."""
    conditions = [
        c
        for e in gatus_config()["endpoints"]
        if e["url"].endswith(STATUS_PATH)
        for c in e["conditions"]
    ]
    deadline = time.monotonic() + WAIT_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{endpoint.url}{STATUS_PATH}", ssl=False) as response:
                status, body = response.status, await response.json()
            failing = [
                c for c in conditions if not gatus_condition_holds(c, status=status, body=body)
            ]
            held = body["models"]["mixtral-8x7b"]["heldRequests"]
            if not failing and held == 1:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"/status: failing {failing}, Mixtral held {held}: {body}")
            await asyncio.sleep(0.2)
    jsonschema.Draft202012Validator(
        STATUS_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(body)
    assert body["heldRequests"] == 1  # the activator holds nothing for the others (0)
    for widget in homepage_widgets():
        for mapping in widget["mappings"]:
            assert homepage_value(mapping["field"], body) is not None, mapping
            if "additionalField" in mapping:
                assert homepage_value(mapping["additionalField"]["field"], body) is not None


async def test_every_dashboard_query_finds_data_from_a_running_adapter(tmp_path: Path) -> None:
    """With the adapter, model servers, activator metrics and the cluster's pod series
    scraped, and scaler's recording rules evaluated, every panel query of every dashboard
    returns data (none is left empty on a working install)."""
    if prometheus_binary() is None:
        pytest.fail("Prometheus is not installed (scripts/test installs it)", pytrace=False)
    shipped = policies()
    standin = KubeStandIn()
    await standin.start()
    _seed(standin)
    servers: dict[str, LlamaCppServer | VllmServer] = {}
    for model, policy in shipped.items():
        if policy.model_class is ModelClass.ON_DEMAND:
            continue  # asleep: no server to scrape until it wakes
        server = VllmServer(model_name=model) if policy.engine is Engine.VLLM else LlamaCppServer()
        server.set(waiting=1, running=2, tokens_per_second=20, requests_per_second=0.2)
        servers[model] = server.start()
    activator = ActivatorMetrics(tuple(sorted(shipped)))
    activator.pending.labels(model="mixtral-8x7b").set(1)  # a request held: wake Mixtral
    activator.forwarded.labels(model="tinyllama").inc()
    activator_endpoint = RegistryEndpoint(activator.exposition)
    activator_endpoint.start()
    vllm = [p.model for p in shipped.values() if p.engine is Engine.VLLM]
    cluster = RegistryEndpoint(
        ClusterExporter(model_pods(shipped.values()), vllm_models=vllm).exposition
    )
    cluster.start()
    prometheus = AdapterScrapingPrometheus(rule_files=[recording_rules_file(tmp_path)])
    prometheus.start()
    stop = asyncio.Event()
    endpoints: list[ApiEndpoint] = []
    task: asyncio.Task[None] | None = None
    source = PrometheusSource(url=prometheus.url, timeout=2.0)
    try:
        options = ServeOptions(
            policies=POLICIES,
            prometheus_url=prometheus.url,
            listen="127.0.0.1:0",
            allow_anonymous=False,  # /metrics must be scrapeable without it
            interval=0.5,
            namespace="scaler-system",
            identity="scaler-0",
        )
        adapter = await build_adapter(
            options=options,
            policies=list(shipped.values()),
            source=source,
            api_client=standin.api_client(),
        )
        task = asyncio.create_task(
            run_adapter(adapter, options=options, stop=stop, on_listening=endpoints.append)
        )
        await _poll(lambda: bool(endpoints), "adapter listening")
        targets = [
            ScrapeTarget(server.address, {"namespace": "cortex", "model": model}, "models")
            for model, server in servers.items()
        ]
        adapter_address = f"{endpoints[0].host}:{endpoints[0].port}"
        prometheus.https_targets = {adapter_address}
        targets.append(ScrapeTarget(adapter_address, {"namespace": "scaler-system"}, "scaler"))
        targets.append(
            ScrapeTarget(activator_endpoint.address, {"namespace": "cortex"}, "scaler-activator")
        )
        targets.append(ScrapeTarget(cluster.address, {}, "cluster"))
        prometheus.reload(targets)
        await prometheus.wait_for_async(f'up{{instance="{adapter_address}"}} == 1')

        # The held request wakes Mixtral: scale 0 -> 1; play the controller: it gets ready.
        await _poll(
            lambda: standin.deployment("cortex", "mixtral-8x7b")["spec"]["replicas"] == 1,
            "Mixtral woken (scale 0 -> 1)",
        )
        standin.add_pod(
            "cortex",
            "mixtral-8x7b-0",
            labels={"app.kubernetes.io/name": "mixtral-8x7b"},
            node=NODES[1],
        )
        standin.set_ready("cortex", "mixtral-8x7b", 1)

        empty = []
        for dashboard, title, expr in QUERIES:
            try:
                await prometheus.wait_for_async(expr, bool, timeout=WAIT_SECONDS)
            except TimeoutError:
                empty.append(f"{dashboard} / {title}: {expr}")
        assert empty == []
        await _status_as_gatus_and_homepage_see_it(endpoints[0])
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, timeout=10)
        await source.aclose()
        prometheus.stop()
        activator_endpoint.stop()
        cluster.stop()
        for server in servers.values():
            server.stop()
        await standin.close()
