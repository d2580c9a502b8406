"""`scaler serve`: flags, start-up failures, the front-proxy ConfigMap, and a whole run in-process
(stand-in Kubernetes, fake source, the real API server read by the official client)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
import structlog
import trustme
from typer.testing import CliRunner

from scaler.api.auth import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from scaler.api.server import ApiEndpoint
from scaler.cli import app
from scaler.core import ModelPolicy
from scaler.live.kube import KubernetesApi
from scaler.live.serve import (
    ServeError,
    ServeOptions,
    build_adapter,
    configure_logging,
    front_proxy_config,
    parse_listen,
    run_adapter,
    serve,
)
from tests.builders import POLICIES
from tests.live.conftest import LEASE_NAMESPACE, NAMESPACE, FakeSource
from tests.live.kube_standin import KubeStandIn

MIXTRAL = "mixtral-8x7b"
POLL_SECONDS, POLL_LIMIT = 0.02, 500  # at most 10 s


@pytest.fixture
def default_logging() -> Iterator[None]:
    """Undo the JSON logging configuration `scaler serve` installs."""
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("default_logging")
def test_bad_policies_exit_1_with_the_loader_errors(tmp_path: Path) -> None:
    """A policy with a wrong type makes `scaler serve` exit 1 naming file, line and field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nreplicas: {min: two, max: 1}\n")
    result = CliRunner().invoke(app, ["serve", "--policies", str(tmp_path), "--no-kubernetes"])
    assert result.exit_code == 1
    assert f"{bad}:2: replicas.min" in result.output


@pytest.mark.parametrize("listen", ["6443", "host:", ":6443", "0.0.0.0:http", "1.2.3.4:70000"])
def test_malformed_listen_is_refused(listen: str) -> None:
    """--listen must be HOST:PORT."""
    with pytest.raises(ServeError, match="--listen"):
        parse_listen(listen)


def test_listen_accepts_ipv6() -> None:
    """[::]:6443 is host :: and port 6443."""
    assert parse_listen("[::]:6443") == ("::", 6443)


async def test_front_proxy_config_comes_from_the_configmap(standin: KubeStandIn) -> None:
    """Without --client-ca-file, the CA and allowed names come from kube-system's ConfigMap;
    --requestheader-allowed-names overrides the names."""
    ca = trustme.CA()
    standin.add_config_map(
        CONFIGMAP_NAMESPACE,
        CONFIGMAP_NAME,
        {
            "requestheader-client-ca-file": ca.cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
        },
    )
    api = KubernetesApi(standin.api_client())
    config = await front_proxy_config(ServeOptions(), api)
    assert config.client_ca_pem == ca.cert_pem.bytes().decode()
    assert config.allowed_names == ("front-proxy-client",)
    named = await front_proxy_config(ServeOptions(requestheader_allowed_names=("aggr",)), api)
    assert named.allowed_names == ("aggr",)


async def test_missing_client_ca_file_is_a_start_error(tmp_path: Path) -> None:
    """A --client-ca-file that does not exist stops the start with the flag named."""
    options = ServeOptions(client_ca_file=tmp_path / "nope.pem", no_kubernetes=True)
    with pytest.raises(ServeError, match="--client-ca-file"):
        await front_proxy_config(options, None)


async def test_a_start_error_leaves_no_signal_handler(tmp_path: Path) -> None:
    """A kubeconfig that cannot be read stops `serve()` with the flag named, and SIGTERM is
    no longer routed to the stopped adapter."""
    options = ServeOptions(policies=POLICIES, kubeconfig=tmp_path / "missing")
    with pytest.raises(ServeError, match="--kubeconfig"):
        await serve(options=options)
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


async def poll(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds, checking every 20 ms, at most 10 s."""
    for _ in range(POLL_LIMIT):
        if condition():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError("condition not met within 10 s")


async def test_serve_runs_scales_serves_and_releases_the_lease(
    standin: KubeStandIn,
    policies: list[ModelPolicy],
    source: FakeSource,
    tmp_path: Path,
) -> None:
    """A whole `serve` in-process: Mixtral's queue makes it write scale 0->1, the official
    client (front-proxy certificate) reads desired replicas 1, and SIGTERM-style stop
    releases the Lease."""
    front_proxy = trustme.CA()
    standin.add_config_map(
        CONFIGMAP_NAMESPACE,
        CONFIGMAP_NAME,
        {
            "requestheader-client-ca-file": front_proxy.cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
        },
    )
    client_cert = tmp_path / "front-proxy-client.pem"
    front_proxy.issue_cert(
        "front-proxy-client", common_name="front-proxy-client"
    ).private_key_and_cert_chain_pem.write_to_path(str(client_cert))
    serving_ca = trustme.CA()
    serving = serving_ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("tls.crt", "tls.key", "ca.crt"))
    serving.cert_chain_pems[0].write_to_path(str(cert_file))
    serving.private_key_pem.write_to_path(str(key_file))
    serving_ca.cert_pem.write_to_path(str(ca_file))
    source.clock = time.time  # a real run: the real clock
    source.set(MIXTRAL, queue_depth=1.0)
    options = ServeOptions(
        listen="127.0.0.1:0",
        interval=0.05,
        namespace=LEASE_NAMESPACE,
        identity="scaler-0",
        tls_cert_file=cert_file,
        tls_private_key_file=key_file,
    )
    adapter = await build_adapter(
        options=options, policies=policies, source=source, api_client=standin.api_client()
    )
    endpoints: list[ApiEndpoint] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_adapter(adapter, options=options, stop=stop, on_listening=endpoints.append)
    )
    try:
        await poll(lambda: bool(standin.writes("deployments", "scale")))
        assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
        assert adapter.health.ready

        config = kubernetes.client.Configuration(host=endpoints[0].url)
        config.ssl_ca_cert = str(ca_file)
        config.cert_file = config.key_file = str(client_cert)
        client = kubernetes.client.ApiClient(config)
        client.default_headers["X-Remote-User"] = "system:kube-controller-manager"
        custom = kubernetes.client.CustomObjectsApi(client)

        def read() -> Any:
            return custom.list_namespaced_custom_object(
                "external.metrics.k8s.io",
                "v1beta1",
                NAMESPACE,
                "scaler-desired-replicas",
                label_selector=f"model={MIXTRAL}",
            )

        body = await asyncio.to_thread(read)
        await asyncio.to_thread(client.close)
        assert body["items"][0]["value"] == "1"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    lease = standin.lease(LEASE_NAMESPACE, "scaler")
    assert lease is not None
    assert lease["spec"].get("holderIdentity") is None  # released on shutdown


async def test_sigterm_stops_a_no_kubernetes_serve(tmp_path: Path) -> None:
    """`serve()` in --no-kubernetes mode answers /healthz, and SIGTERM ends it cleanly."""
    options = ServeOptions(
        policies=POLICIES,
        prometheus_url="http://127.0.0.1:9",
        listen="127.0.0.1:0",
        interval=0.05,
        no_kubernetes=True,
        allow_anonymous=True,
    )
    endpoints: list[ApiEndpoint] = []
    task = asyncio.create_task(serve(options=options, on_listening=endpoints.append))
    await poll(lambda: bool(endpoints) or task.done())
    assert endpoints, task
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{endpoints[0].url}/healthz", ssl=False) as response,
    ):
        assert response.status == 200
    os.kill(os.getpid(), signal.SIGTERM)  # serve() installed its handler before listening
    await asyncio.wait_for(task, timeout=10)


@pytest.mark.usefixtures("default_logging")
def test_log_level_filters_the_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-level warning drops info and debug lines; debug shows them all."""
    configure_logging("warning")
    logger = structlog.get_logger("scaler.test")
    logger.info("hidden_info")
    logger.warning("shown_warning")
    configure_logging("debug")
    logger.debug("shown_debug")
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events == ["shown_warning", "shown_debug"]


@pytest.mark.usefixtures("default_logging")
def test_unknown_log_level_is_a_start_error() -> None:
    """`scaler serve --log-level loud` exits 1 naming the flag and the choices."""
    result = CliRunner().invoke(app, ["serve", "--log-level", "loud", "--no-kubernetes"])
    assert result.exit_code == 1
    assert "--log-level 'loud'" in result.output
