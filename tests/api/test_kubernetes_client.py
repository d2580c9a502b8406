"""The API over TLS with front-proxy client certificates, read by the official clients.

The server runs in-process on 127.0.0.1:0 with a generated serving certificate; the sync
`kubernetes` client runs in a thread, kubectl in a subprocess. Clients present a trustme
front-proxy certificate (CN front-proxy-client) and the user headers the aggregator would set.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.client
import pytest
import trustme
import yaml

from scaler.api.auth import Authenticator, load_requestheader_config
from scaler.api.server import ApiEndpoint, serve_api
from scaler.api.tls import serving_ssl_context
from scaler.core import Signal
from tests.api.conftest import MODELS, STALENESS, START, Wiring, make_decision

GROUP, VERSION = "external.metrics.k8s.io", "v1beta1"
DESIRED = "scaler-desired-replicas"
KUBECTL = shutil.which("kubectl")


@dataclass
class Cluster:
    """A served API and the files a client needs to reach it."""

    endpoint: ApiEndpoint
    wiring: Wiring
    serving_ca: Path
    client_cert: Path  # key and certificate of the front-proxy client, one PEM file
    tmp: Path
    clients: list[kubernetes.client.ApiClient]

    def api_client(
        self, *, cert: Path | None = None, user: str | None = "system:kube-controller-manager"
    ) -> kubernetes.client.ApiClient:
        """An official-client ApiClient with a client certificate and the proxy's user header."""
        config = kubernetes.client.Configuration()
        config.host = self.endpoint.url
        config.ssl_ca_cert = str(self.serving_ca)
        config.cert_file = config.key_file = str(cert or self.client_cert)
        client = kubernetes.client.ApiClient(config)
        self.clients.append(client)  # closed before the server stops: no dangling sockets
        if user is not None:
            client.default_headers["X-Remote-User"] = user
            client.default_headers["X-Remote-Group"] = "system:masters"
        return client


@pytest.fixture
def front_proxy_ca() -> trustme.CA:
    """The request-header CA that signs the aggregator's front-proxy client certificate."""
    return trustme.CA()


@pytest.fixture
async def cluster(
    tmp_path: Path, front_proxy_ca: trustme.CA, wiring: Wiring
) -> AsyncIterator[Cluster]:
    """The API served over TLS, configured from an extension-apiserver-authentication map."""
    config = load_requestheader_config(
        {
            "requestheader-client-ca-file": front_proxy_ca.cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            # kubectl cannot set X-Remote-User, but --as sends Impersonate-User.
            "requestheader-username-headers": '["X-Remote-User", "Impersonate-User"]',
            "requestheader-group-headers": '["X-Remote-Group", "Impersonate-Group"]',
        }
    )
    wiring.authenticator = Authenticator(config)
    context, generated = serving_ssl_context(client_ca_pem=config.client_ca_pem)
    assert generated is not None
    serving_ca = tmp_path / "serving-ca.crt"
    serving_ca.write_bytes(generated.ca_pem)
    client_cert = tmp_path / "front-proxy-client.pem"
    leaf = front_proxy_ca.issue_cert("front-proxy-client", common_name="front-proxy-client")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(client_cert))
    for model in MODELS:
        wiring.store.publish(make_decision(model, signals={Signal.QUEUE_DEPTH: 0.0}))
    # The official client keeps a connection checked out after an ApiException; a short
    # close grace lets the server abort it at teardown.
    serving = serve_api(
        wiring.app(), host="127.0.0.1", port=0, ssl_context=context, close_grace=0.1
    )
    async with serving as endpoint:
        cluster = Cluster(endpoint, wiring, serving_ca, client_cert, tmp_path, [])
        yield cluster
        for client in cluster.clients:
            await in_thread(client.close)


async def in_thread(call: Callable[[], Any]) -> Any:
    """Run a blocking client call off the event loop that serves it."""
    return await asyncio.to_thread(call)


async def test_official_client_lists_the_selected_value(cluster: Cluster) -> None:
    """list_namespaced_custom_object on our metric returns the model's ExternalMetricValueList."""
    api = kubernetes.client.CustomObjectsApi(cluster.api_client())
    body = await in_thread(
        lambda: api.list_namespaced_custom_object(
            GROUP, VERSION, "cortex", DESIRED, label_selector="model=mistral-7b"
        )
    )
    assert body["kind"] == "ExternalMetricValueList"
    assert body["items"] == [
        {
            "metricName": DESIRED,
            "metricLabels": {"model": "mistral-7b"},
            "timestamp": "2026-09-21T14:13:20Z",
            "value": "2",
        }
    ]


async def test_official_client_reads_a_true_zero(cluster: Cluster) -> None:
    """A measured 0 reaches the client as the Quantity "0"."""
    api = kubernetes.client.CustomObjectsApi(cluster.api_client())
    body = await in_thread(
        lambda: api.list_namespaced_custom_object(
            GROUP, VERSION, "cortex", "scaler-queue-depth", label_selector="model=tinyllama"
        )
    )
    assert body["items"][0]["value"] == "0"


async def test_official_client_discovery(cluster: Cluster) -> None:
    """ApisApi and get_api_resources see our group and a non-empty resource list."""
    client = cluster.api_client()
    groups = await in_thread(lambda: kubernetes.client.ApisApi(client).get_api_versions())
    assert [g.name for g in groups.groups] == [GROUP]
    resources = await in_thread(
        lambda: kubernetes.client.CustomObjectsApi(client).get_api_resources(GROUP, VERSION)
    )
    assert DESIRED in {r.name for r in resources.resources}
    assert all(r.namespaced and r.verbs == ["get"] for r in resources.resources)


@pytest.mark.parametrize(
    ("metric", "selector", "code"),
    [("scaler-foo", "model=mistral-7b", 404), (DESIRED, "model in (", 400)],
)
async def test_official_client_gets_status_errors(
    cluster: Cluster, metric: str, selector: str, code: int
) -> None:
    """Unknown metric and bad selector reach the client as ApiException with a Status body."""
    api = kubernetes.client.CustomObjectsApi(cluster.api_client())
    with pytest.raises(kubernetes.client.ApiException) as caught:
        await in_thread(
            lambda: api.list_namespaced_custom_object(
                GROUP, VERSION, "cortex", metric, label_selector=selector
            )
        )
    assert caught.value.status == code
    assert json.loads(caught.value.body or "{}")["code"] == code


async def test_stale_value_reaches_the_client_as_503(cluster: Cluster) -> None:
    """Past the staleness limit the HPA's read fails with 503 (and the HPA holds)."""
    cluster.wiring.clock.now = START + STALENESS + 1
    api = kubernetes.client.CustomObjectsApi(cluster.api_client())
    with pytest.raises(kubernetes.client.ApiException) as caught:
        await in_thread(
            lambda: api.list_namespaced_custom_object(
                GROUP, VERSION, "cortex", DESIRED, label_selector="model=mistral-7b"
            )
        )
    assert caught.value.status == 503


async def test_certificate_without_user_header_is_401(cluster: Cluster) -> None:
    """A verified front-proxy certificate alone asserts nobody: 401 Status."""
    api = kubernetes.client.CustomObjectsApi(cluster.api_client(user=None))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        await in_thread(
            lambda: api.list_namespaced_custom_object(GROUP, VERSION, "cortex", DESIRED)
        )
    assert caught.value.status == 401
    assert json.loads(caught.value.body or "{}")["reason"] == "Unauthorized"


async def test_certificate_with_another_cn_is_401(
    cluster: Cluster, front_proxy_ca: trustme.CA
) -> None:
    """A certificate from the right CA but a CN outside allowed names cannot assert a user."""
    other = cluster.tmp / "other.pem"
    front_proxy_ca.issue_cert(
        "intruder", common_name="intruder"
    ).private_key_and_cert_chain_pem.write_to_path(str(other))
    api = kubernetes.client.CustomObjectsApi(cluster.api_client(cert=other))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        await in_thread(
            lambda: api.list_namespaced_custom_object(GROUP, VERSION, "cortex", DESIRED)
        )
    assert caught.value.status == 401


def client_context(cluster: Cluster, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """An aiohttp client context trusting the serving CA, with an optional client cert."""
    context = ssl.create_default_context(cafile=str(cluster.serving_ca))
    if cert is not None:
        path = cluster.tmp / "client.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        context.load_cert_chain(str(path))
    return context


async def test_no_client_certificate_is_401_but_probes_answer(cluster: Cluster) -> None:
    """Without a certificate the API is 401 even with user headers; probes are open."""
    url = cluster.endpoint.url
    async with aiohttp.ClientSession() as session:
        headers = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
        api = await session.get(
            f"{url}/apis/{GROUP}/{VERSION}", ssl=client_context(cluster), headers=headers
        )
        assert api.status == 401
        assert (await api.json())["kind"] == "Status"
        for probe in ("/healthz", "/livez"):
            assert (await session.get(url + probe, ssl=client_context(cluster))).status == 200


async def test_certificate_from_another_ca_fails_the_handshake(cluster: Cluster) -> None:
    """A client certificate no request-header CA signed is refused at the TLS layer."""
    stranger = trustme.CA().issue_cert("front-proxy-client", common_name="front-proxy-client")
    context = client_context(cluster, stranger)
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            await (await session.get(f"{cluster.endpoint.url}/apis", ssl=context)).read()


def kubeconfig(cluster: Cluster) -> Path:
    """A kubeconfig pointing kubectl at the server with the front-proxy client certificate."""
    path = cluster.tmp / "kubeconfig"
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "scaler",
                "cluster": {
                    "server": cluster.endpoint.url,
                    "certificate-authority": str(cluster.serving_ca),
                },
            }
        ],
        "users": [
            {
                "name": "front-proxy",
                "user": {
                    "client-certificate": str(cluster.client_cert),
                    "client-key": str(cluster.client_cert),
                },
            }
        ],
        "contexts": [{"name": "scaler", "context": {"cluster": "scaler", "user": "front-proxy"}}],
        "current-context": "scaler",
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def kubectl(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    """Run kubectl against the server as the HPA controller; (exit code, stdout, stderr)."""
    assert KUBECTL is not None
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        f"--kubeconfig={kubeconfig(cluster)}",
        f"--cache-dir={cluster.tmp / 'cache'}",
        "--as=system:kube-controller-manager",
        "--as-group=system:masters",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_get_raw_reads_the_value(cluster: Cluster) -> None:
    """kubectl get --raw with a URL-encoded selector returns the selected model's item."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/cortex/{DESIRED}?labelSelector=model%3Dmistral-7b"
    code, out, err = await kubectl(cluster, "get", "--raw", path)
    assert code == 0, err
    body = json.loads(out)
    assert [(i["metricLabels"]["model"], i["value"]) for i in body["items"]] == [
        ("mistral-7b", "2")
    ]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_api_resources_discovers_every_metric(cluster: Cluster) -> None:
    """kubectl's discovery (api-resources) lists our metrics, without an empty-list error."""
    code, out, err = await kubectl(cluster, "api-resources", f"--api-group={GROUP}", "-o", "name")
    assert code == 0, err
    assert "Got empty response" not in err
    assert f"{DESIRED}.{GROUP}" in out.split()
