"""`scaler serve`: the control loop, leader election and the external metrics API, together.

Wiring, in order: load and validate the policies (any error: exit 1 with the loader's
messages); connect to the Kubernetes API (in-cluster by default, or ``--kubeconfig``) unless
``--no-kubernetes``; get the front-proxy CA (``--client-ca-file``, else the ConfigMap
``kube-system/extension-apiserver-authentication`` in cluster); build the TLS context (a
self-signed certificate when none is given); then run, until SIGTERM/SIGINT or `stop`:

- the API server (scaler.api.server), which answers from the DecisionStore only;
- the control loop (every ``--interval`` seconds);
- the leader elector (every 2 s; Kubernetes mode only).

Shutdown: stop ticking, release the Lease (so another replica takes over at once, not after
15 s), close the API server (requests in flight finish), close the Prometheus source.
Logs are structlog JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from scaler.api.auth import (
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    Authenticator,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    load_requestheader_config,
)
from scaler.api.listener import return_freed_connection_memory
from scaler.api.selfmetrics import Health, SelfMetrics
from scaler.api.server import ApiEndpoint, build_app, serve_api
from scaler.api.status import HeldRequests, StatusPage
from scaler.api.store import DecisionStore
from scaler.api.tls import service_hosts, serving_ssl_context
from scaler.core import ModelPolicy
from scaler.live.actuator import Actuator
from scaler.live.cluster_reader import ClusterReader
from scaler.live.holds import HoldsSource, SourceWithHolds
from scaler.live.kube import KubernetesApi, KubernetesError
from scaler.live.leader import RETRY_SECONDS, LeaderElector
from scaler.live.loop import ControlLoop, KubernetesSide, MetricsSource
from scaler.policy import check_policies, fatal
from scaler.sources import PrometheusSource

LEASE_NAME = "scaler"
DEFAULT_LEASE_NAMESPACE = "scaler-system"
SERVICE_NAME = "scaler"  # the adapter's Service (manifests/workloads/service-scaler.yaml)

_log = structlog.get_logger("scaler.live.serve")


class ServeError(Exception):
    """A problem that stops `scaler serve` from starting; the message names the flag or file."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The flags of `scaler serve` (docs/cli.md, "scaler serve")."""

    policies: Path = Path("policies")
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    listen: str = "0.0.0.0:6443"
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    client_ca_file: Path | None = None
    requestheader_allowed_names: tuple[str, ...] | None = None
    allow_anonymous: bool = False
    kubeconfig: Path | None = None
    interval: float = 5.0
    staleness: float | None = None  # default: the largest data.staleAfterSeconds
    no_kubernetes: bool = False
    namespace: str | None = None  # of the Lease; default $POD_NAMESPACE
    identity: str | None = None  # default $HOSTNAME
    query_timeout: float = 3.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:6443`` for IPv6) as (host, port); ServeError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ServeError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:6443")
    return host, int(port)


LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "info") -> None:
    """structlog JSON lines on stdout, with ISO timestamps and levels, from `level` up
    (one of LOG_LEVELS; ServeError otherwise)."""
    if level.lower() not in LOG_LEVELS:
        raise ServeError(f"--log-level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # No file argument: each line goes to the sys.stdout of the moment (tests swap it).
        logger_factory=structlog.PrintLoggerFactory(),
    )


def load_policies_or_fail(path: Path) -> list[ModelPolicy]:
    """The policies under `path`; ServeError listing every loader error otherwise."""
    policies, errors = check_policies([path])
    if fatal(errors):
        raise ServeError("\n".join(str(e) for e in fatal(errors)))
    for warning in errors:
        _log.warning("policy_warning", problem=str(warning))
    return policies


def kubernetes_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """An ApiClient from `kubeconfig`, or the in-cluster service account; no client retries
    (the loop retries on its next tick)."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig is not None:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (k8s_config.ConfigException, OSError) as exc:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster configuration"
        raise ServeError(
            f"cannot configure the Kubernetes client from {where}: {exc}"
            " (use --kubeconfig, or --no-kubernetes for a dry run)"
        ) from None
    configuration.retries = 0
    api_client = k8s.ApiClient(configuration)
    api_client.user_agent = "scaler"
    return api_client


async def front_proxy_config(
    options: ServeOptions, api: KubernetesApi | None
) -> RequestHeaderConfig:
    """The request-header (front-proxy) configuration: the flags, else the cluster's ConfigMap."""
    if options.client_ca_file is not None:
        try:
            ca = options.client_ca_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServeError(f"--client-ca-file {options.client_ca_file}: {exc}") from None
        if "-----BEGIN CERTIFICATE-----" not in ca:
            raise ServeError(f"--client-ca-file {options.client_ca_file}: no PEM certificate")
        config = RequestHeaderConfig(client_ca_pem=ca)
    elif api is not None:
        try:
            data = await api.read_config_map(CONFIGMAP_NAMESPACE, CONFIGMAP_NAME)
            config = load_requestheader_config(data)
        except (KubernetesError, RequestHeaderConfigError) as exc:
            raise ServeError(
                f"cannot read the front-proxy CA from {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}:"
                f" {exc} (or pass --client-ca-file)"
            ) from None
    else:
        config = RequestHeaderConfig()
    if options.requestheader_allowed_names is not None:
        config = RequestHeaderConfig(
            client_ca_pem=config.client_ca_pem,
            allowed_names=options.requestheader_allowed_names,
            username_headers=config.username_headers,
            group_headers=config.group_headers,
            extra_headers_prefixes=config.extra_headers_prefixes,
        )
    return config


@dataclass
class Adapter:
    """Everything `serve` runs, built but not started (tests build one and drive it)."""

    policies: tuple[ModelPolicy, ...]
    store: DecisionStore
    metrics: SelfMetrics
    health: Health
    loop: ControlLoop
    elector: LeaderElector | None
    authenticator: Authenticator
    api: KubernetesApi | None
    held: HeldRequests  # the activator's held requests, for /status


async def build_adapter(
    *,
    options: ServeOptions,
    policies: list[ModelPolicy],
    source: MetricsSource,
    api_client: k8s.ApiClient | None,
    clock: Callable[[], float] = time.time,
    request_timeout: float = 5.0,
) -> Adapter:
    """Wire the loop, the elector and the API's collaborators; reads the front-proxy config."""
    api = (
        KubernetesApi(api_client, request_timeout=request_timeout)
        if api_client is not None and not options.no_kubernetes
        else None
    )
    staleness = options.staleness or max(p.data.stale_after_seconds for p in policies)
    store = DecisionStore([p.model for p in policies], staleness_seconds=staleness)
    metrics, health = SelfMetrics(), Health()
    identity = options.identity or os.environ.get("HOSTNAME") or socket.gethostname()
    elector: LeaderElector | None = None
    side: KubernetesSide | None = None
    if api is not None:
        elector = LeaderElector(
            api=api,
            namespace=options.namespace
            or os.environ.get("POD_NAMESPACE")
            or DEFAULT_LEASE_NAMESPACE,
            name=LEASE_NAME,
            identity=identity,
            clock=clock,
        )
        side = KubernetesSide(
            api=api,
            reader=ClusterReader(api=api),
            actuator=Actuator(api=api, metrics=metrics, identity=identity, clock=clock),
            elector=elector,
        )
    held = HeldRequests()
    if isinstance(source, HoldsSource):  # test fakes may read signals only
        source = SourceWithHolds(source, held, clock=clock)
    loop = ControlLoop(
        policies=policies,
        source=source,
        store=store,
        clock=clock,
        metrics=metrics,
        health=health,
        kubernetes=side,
        read_timeout=max(options.interval, options.query_timeout),
    )
    authenticator = Authenticator(
        await front_proxy_config(options, api), allow_anonymous=options.allow_anonymous
    )
    return Adapter(
        policies=tuple(policies),
        store=store,
        metrics=metrics,
        health=health,
        loop=loop,
        elector=elector,
        authenticator=authenticator,
        api=api,
        held=held,
    )


async def _elect(elector: LeaderElector, metrics: SelfMetrics, stop: asyncio.Event) -> None:
    """Acquire/renew every RETRY_SECONDS until `stop`."""
    while not stop.is_set():
        try:
            metrics.set_leader(await elector.step())
        except Exception:  # never let the elector die: the loop would lose its leader flag
            _log.exception("leader_election_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=RETRY_SECONDS)


@contextlib.asynccontextmanager
async def serving(
    adapter: Adapter, *, options: ServeOptions, clock: Callable[[], float] = time.time
) -> AsyncIterator[ApiEndpoint]:
    """The API server of `adapter`, listening until the block exits (the loop not started)."""
    host, port = parse_listen(options.listen)
    try:
        ssl_context, _generated = serving_ssl_context(
            cert_file=options.tls_cert_file,
            key_file=options.tls_private_key_file,
            client_ca_pem=adapter.authenticator.config.client_ca_pem,
            # The aggregator dials <service>.<namespace>.svc; with a caBundle the generated
            # certificate must name it.
            hosts=service_hosts(
                SERVICE_NAME,
                options.namespace or os.environ.get("POD_NAMESPACE") or DEFAULT_LEASE_NAMESPACE,
            ),
        )
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    app = build_app(
        store=adapter.store,
        metrics=adapter.metrics,
        health=adapter.health,
        authenticator=adapter.authenticator,
        clock=clock,
        namespaces={p.model: p.target.namespace for p in adapter.policies},
        status=StatusPage(
            store=adapter.store,
            classes={p.model: p.model_class.value for p in adapter.policies},
            held=adapter.held,
            ready=lambda: adapter.health.ready,
            clock=clock,
        ),
    )
    async with serve_api(app, host=host, port=port, ssl_context=ssl_context) as endpoint:
        _log.info(
            "serving",
            url=endpoint.url,
            models=[p.model for p in adapter.policies],
            kubernetes=adapter.api is not None,
            identity=adapter.elector.identity if adapter.elector else None,
        )
        yield endpoint


async def run_adapter(
    adapter: Adapter,
    *,
    options: ServeOptions,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
    on_listening: Callable[[ApiEndpoint], None] | None = None,  # used for testing
) -> None:
    """Serve the API and run the loop (and elector) until `stop` is set; then shut down:
    stop ticking, release the Lease, close the API server."""
    async with serving(adapter, options=options, clock=clock) as endpoint:
        if on_listening is not None:
            on_listening(endpoint)
        tasks = [asyncio.create_task(adapter.loop.run(interval=options.interval, stop=stop))]
        if adapter.elector is not None:
            tasks.append(asyncio.create_task(_elect(adapter.elector, adapter.metrics, stop)))
        try:
            await stop.wait()
        finally:
            _log.info("shutting_down")
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if adapter.elector is not None:
                await adapter.elector.release()
    _log.info("stopped")


async def serve(
    *,
    options: ServeOptions,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
    on_listening: Callable[[ApiEndpoint], None] | None = None,  # used for testing
) -> None:
    """The whole `scaler serve` command; raises ServeError for a problem at start."""
    policies = load_policies_or_fail(options.policies)
    parse_listen(options.listen)  # fail on a bad flag before touching the network
    return_freed_connection_memory()
    stop = stop or asyncio.Event()
    api_client = None if options.no_kubernetes else kubernetes_client(options.kubeconfig)
    source = PrometheusSource(url=options.prometheus_url, timeout=options.query_timeout)
    # Installed only now, inside the try, so every way out (a start error included) removes them.
    running = asyncio.get_running_loop()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                running.add_signal_handler(signum, stop.set)
        adapter = await build_adapter(
            options=options, policies=policies, source=source, api_client=api_client, clock=clock
        )
        await run_adapter(
            adapter, options=options, stop=stop, clock=clock, on_listening=on_listening
        )
    finally:
        await source.aclose()
        if api_client is not None:
            api_client.close()  # type: ignore[no-untyped-call]
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                running.remove_signal_handler(signum)
