"""``scaler activator``: load the policies, pick the readiness sources, serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from yarl import URL

from scaler.activator.endpoints import EndpointSliceWatch, EndpointTracker, HealthPoll, HealthProbe
from scaler.activator.proxy import Activator, ActivatorConfig, serving
from scaler.activator.routes import HOLD_MARGIN_SECONDS, RouteError, build_routes, parse_upstream
from scaler.activator.wake import DeploymentWaker
from scaler.policy import PolicyLoadError, load_policies

log = structlog.get_logger("scaler.activator")
DEFAULTS = ActivatorConfig()


@dataclass(frozen=True, slots=True)
class ActivatorOptions:
    """Everything ``scaler activator`` was asked to do, parsed and checked."""

    policies: Path
    host: str
    port: int
    config: ActivatorConfig
    upstreams: dict[str, URL]
    kubernetes: bool
    kubeconfig: Path | None
    scale_on_wake: bool
    hold_margin_s: float
    health_interval_s: float
    drain_s: float = 25.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for all interfaces) as (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def configure_logging(level: str) -> None:
    """Structured JSON logs, one object per line on stderr."""
    logging.basicConfig(level=level.upper(), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _api_client(kubeconfig: Path | None) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config  # the config loaders are untyped
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


async def run_activator(*, options: ActivatorOptions, stop: asyncio.Event | None = None) -> None:
    """Serve the activator until `stop` is set (or SIGTERM/SIGINT when `stop` is None)."""
    routes = build_routes(
        load_policies(options.policies),
        upstreams=options.upstreams,
        hold_margin_s=options.hold_margin_s,
    )
    api_client = _api_client(options.kubeconfig) if options.kubernetes else None
    waker = (
        DeploymentWaker(api_client=api_client)
        if options.scale_on_wake and api_client is not None
        else None
    )
    tracker = EndpointTracker()
    activator = Activator(routes=routes, tracker=tracker, config=options.config, wake=waker)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with serving(
        activator.app(), host=options.host, port=options.port, drain_s=options.drain_s
    ) as url:
        # Routes with an --upstream override (and all of them without Kubernetes) are polled;
        # the rest follow their Service's EndpointSlices.
        polled = [r for r in routes if r.overridden or api_client is None]
        watched = [r for r in routes if not r.overridden and api_client is not None]
        poll = HealthPoll(
            routes=polled,
            tracker=tracker,
            probe=HealthProbe(activator.session),
            interval_s=options.health_interval_s,
        )
        if api_client is None:
            for route in routes:
                if not route.overridden:
                    log.warning(
                        "upstream_not_given",
                        model=route.model,
                        upstream=str(route.upstream),
                        hint=f"no --upstream {route.model}=URL: its requests go to the "
                        "in-cluster Service name; pass --upstream, or --policies with only "
                        "the models you run",
                    )
        poll.start()
        watch = EndpointSliceWatch(routes=watched, tracker=tracker, api_client=api_client)
        if watched:
            watch.start()
        log.info(
            "activator_started",
            url=str(url),
            models=[
                {
                    "model": r.model,
                    "upstream": str(r.upstream),
                    "host": r.host,
                    "pathPrefix": r.path_prefix,
                    "holdTimeoutSeconds": r.hold_timeout_s,
                    "readiness": "endpointslices" if r in watched else "health-poll",
                }
                for r in routes
            ],
        )
        try:
            await stop.wait()
        finally:
            await poll.stop()
            if watched:
                await watch.stop()
            if waker is not None:
                await waker.drain()
    log.info("activator_stopped")


def activator_command(
    policies: Annotated[
        Path, typer.Option(help="Policy file or folder: routes, Services and hold timeouts.")
    ] = Path("policies"),
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on.")] = "0.0.0.0:8080",
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body; larger ones get 413.")
    ] = DEFAULTS.max_body_bytes,
    queue_size: Annotated[
        int, typer.Option(min=1, help="Most requests held per model; more get 503.")
    ] = DEFAULTS.queue_size,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig file (default: in-cluster, then ~/.kube/config)."),
    ] = None,
    no_kubernetes: Annotated[
        bool,
        typer.Option(
            "--no-kubernetes", help="No API server: poll each model's /health for readiness."
        ),
    ] = False,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL=URL: send MODEL's requests to URL instead of its Service (repeatable);"
            " its readiness is then polled from URL/health.",
        ),
    ] = None,
    scale_on_wake: Annotated[
        bool,
        typer.Option(
            "--scale-on-wake",
            help="Also scale a cold model's Deployment 0→1 through the scale subresource.",
        ),
    ] = False,
    hold_margin: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds added to the policy's cold-start budget (coldStart.seconds × "
            "overdueFactor, at least uncachedSeconds): the hold timeout.",
        ),
    ] = HOLD_MARGIN_SECONDS,
    health_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between /health polls.")
    ] = 1.0,
    drain_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM: held requests get 503 at once; responses in flight get this long"
            " to finish (keep it below the pod's terminationGracePeriodSeconds).",
        ),
    ] = 25.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """The cold-start activator: a reverse proxy that holds requests while a model wakes."""
    configure_logging(log_level)
    try:
        host, port = parse_listen(listen)
        upstreams = dict(parse_upstream(u) for u in upstream or ())
    except (ValueError, RouteError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    options = ActivatorOptions(
        policies=policies,
        host=host,
        port=port,
        config=ActivatorConfig(max_body_bytes=max_body_bytes, queue_size=queue_size),
        upstreams=upstreams,
        kubernetes=not no_kubernetes,
        kubeconfig=kubeconfig,
        scale_on_wake=scale_on_wake,
        hold_margin_s=hold_margin,
        health_interval_s=health_interval,
        drain_s=drain_seconds,
    )
    if scale_on_wake and no_kubernetes:
        typer.echo("error: --scale-on-wake needs Kubernetes (drop --no-kubernetes)", err=True)
        raise typer.Exit(code=2)
    try:
        asyncio.run(run_activator(options=options))
    except PolicyLoadError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except RouteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
