"""``scaler serve``: parse the flags, run the adapter until SIGTERM, exit 1 on a start problem."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from scaler.live.serve import ServeError, ServeOptions, configure_logging, serve

_DEFAULTS = ServeOptions()


def serve_command(
    policies: Annotated[
        Path, typer.Option(help="Policy file or folder of them.")
    ] = _DEFAULTS.policies,
    prometheus_url: Annotated[
        str, typer.Option(help="Base URL of the Prometheus HTTP API.")
    ] = _DEFAULTS.prometheus_url,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT the external metrics API listens on (TLS).")
    ] = _DEFAULTS.listen,
    tls_cert_file: Annotated[
        Path | None,
        typer.Option(help="Serving certificate (PEM); a self-signed one is made when absent."),
    ] = None,
    tls_private_key_file: Annotated[
        Path | None, typer.Option(help="Private key of --tls-cert-file (PEM).")
    ] = None,
    client_ca_file: Annotated[
        Path | None,
        typer.Option(
            help="Front-proxy (request-header) CA; default: the kube-system/"
            "extension-apiserver-authentication ConfigMap."
        ),
    ] = None,
    requestheader_allowed_names: Annotated[
        str | None,
        typer.Option(help="Comma-separated client-certificate CNs allowed to assert users."),
    ] = None,
    allow_anonymous: Annotated[
        bool, typer.Option(help="Serve unauthenticated requests (local dry runs only).")
    ] = False,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig file; default: in-cluster service account.")
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between control-loop ticks.")
    ] = _DEFAULTS.interval,
    staleness: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Seconds after which values are answered 503; default: the largest "
            "data.staleAfterSeconds of the policies.",
        ),
    ] = None,
    no_kubernetes: Annotated[
        bool,
        typer.Option(
            "--no-kubernetes",
            help="Decide and serve, never touch a cluster; replicas from Prometheus.",
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(help="Namespace of the leader Lease; default $POD_NAMESPACE."),
    ] = None,
    identity: Annotated[
        str | None, typer.Option(help="Leader-election identity; default $HOSTNAME.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the adapter: control loop, scale-from-zero, leader election, external metrics API."""
    names = (
        None
        if requestheader_allowed_names is None
        else tuple(n.strip() for n in requestheader_allowed_names.split(",") if n.strip())
    )
    options = ServeOptions(
        policies=policies,
        prometheus_url=prometheus_url,
        listen=listen,
        tls_cert_file=tls_cert_file,
        tls_private_key_file=tls_private_key_file,
        client_ca_file=client_ca_file,
        requestheader_allowed_names=names,
        allow_anonymous=allow_anonymous,
        kubeconfig=kubeconfig,
        interval=interval,
        staleness=staleness,
        no_kubernetes=no_kubernetes,
        namespace=namespace,
        identity=identity,
    )
    try:
        configure_logging(log_level)
        asyncio.run(serve(options=options))
    except ServeError as exc:
        typer.echo(f"scaler serve: {exc}", err=True)
        raise typer.Exit(code=1) from None
