"""The aiohttp server: external.metrics.k8s.io/v1beta1, probes, /metrics, /debug/decisions.

Every answer comes from memory (the DecisionStore, precomputed discovery bodies): a request
never waits on Prometheus or on the control loop. Every error is a ``metav1.Status`` JSON
object, so the aggregator and the HPA log the message rather than "an error that is not a
metav1.Status". A guard around every route authenticates (front proxy, see
``scaler.api.auth``), times the request by route template and turns any unexpected exception
into a 500 Status and a log line: a bad request never takes the server down. Other methods on
a served path are 405, unknown paths 404, both as Status objects.

The HPA's question, one model by ``model=<name>``, is a lookup of the body the store rendered
when the decision was published; any other selector takes the general path (parse, select,
read, render), which gives the same bytes for that question. Each served namespace's metrics
have routes of their own (a dictionary lookup for aiohttp, where the route with placeholders
is a pattern match), on which the question is looked up by its raw query string, unparsed.

Namespaces: the HPA asks in its own namespace, and each model's HPA lives in the model's
target namespace (policy ``target.namespace``). With a ``namespaces`` mapping, a model is
served only in its namespace; elsewhere it is not found (404), so an HPA in another namespace
cannot read, and sum, it by accident. Without the mapping every model is served everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import structlog
from aiohttp import web
from yarl import URL

from scaler.api.auth import AuthenticationError, Authenticator, UserInfo
from scaler.api.listener import ConnectionLimits, ListenerSite, client_common_name
from scaler.api.selector import Operator, Requirement, Selector, SelectorError, parse_selector
from scaler.api.selfmetrics import EXPOSITION_CONTENT_TYPE, Health, SelfMetrics
from scaler.api.status import STATUS_PATH, StatusPage
from scaler.api.store import DecisionStore, StaleMetricError, UnknownMetricError
from scaler.api.value_list import render_item, render_value_list
from scaler.metric_names import EXTERNAL_METRICS, MODEL_LABEL

log = structlog.get_logger(__name__)

GROUP: Final = "external.metrics.k8s.io"
VERSION: Final = "v1beta1"
GROUP_VERSION: Final = f"{GROUP}/{VERSION}"
VALUE_LIST_PATH: Final = f"/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{{metric}}"
DEFAULT_DECISIONS_LIMIT: Final = 100

USER_KEY: Final = web.RequestKey("scaler.user", UserInfo)
"""Request key under which the authenticated UserInfo is stored."""

_JSON: Final = "application/json"
_REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
_KNOWN_METRICS: Final = frozenset(EXTERNAL_METRICS)
_JSON_HEADERS: Final = {"Content-Type": _JSON}

Clock = Callable[[], float]
"""Seconds since the epoch; injected so tests drive staleness without sleeping."""


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def status_body(code: int, message: str) -> bytes:
    """A ``metav1.Status`` failure document for HTTP `code`."""
    return _dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _REASONS.get(code, "Unknown"),
            "code": code,
        }
    )


def status_response(code: int, message: str) -> web.Response:
    """A ``metav1.Status`` failure response for HTTP `code`."""
    return web.Response(status=code, body=status_body(code, message), content_type=_JSON)


def _discovery_bodies() -> tuple[bytes, bytes, bytes]:
    """APIGroupList, APIGroup and APIResourceList, computed once: discovery is constant."""
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    group = {"name": GROUP, "versions": [version], "preferredVersion": version}
    resources = [
        # singularName, namespaced, kind and verbs are not omitempty: always present.
        {
            "name": metric,
            "singularName": "",
            "namespaced": True,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }
        for metric in EXTERNAL_METRICS
    ]
    assert resources, "an empty resource list breaks kubectl and helm discovery"
    return (
        _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}),
        _dumps({"kind": "APIGroup", "apiVersion": "v1", **group}),
        _dumps(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": GROUP_VERSION,
                "resources": resources,
            }
        ),
    )


def _single_model_selectors(models: Iterable[str]) -> dict[str, str]:
    """``model=<name>`` -> name, for each model whose selector parses to just that equality.

    A name that is not a valid label value (the general path answers 400 for it) is left
    out, so a lookup never answers what the general path would refuse.
    """
    found = {}
    for model in models:
        text = f"{MODEL_LABEL}={model}"
        with contextlib.suppress(SelectorError):
            equality = Requirement(MODEL_LABEL, Operator.EQUALS, frozenset({model}))
            if parse_selector(text) == Selector((equality,)):
                found[text] = model
    return found


def _raw_queries(selected_by: Mapping[str, str]) -> dict[str, str]:
    """The query strings, as sent, that ask for one of `selected_by`'s selectors -> its model.

    The HPA's client (client-go's ``url.Values.Encode``) and the aggregator escape the
    selector as ``labelSelector=model%3D<name>``; the unescaped form is kept too. A form is
    kept only if the server's own query parsing (yarl's, as aiohttp's) reads it back as that
    one parameter with that selector, so a lookup by the raw string answers exactly what
    the parsed query would.
    """
    found = {}
    for text, model in selected_by.items():
        for raw in (f"labelSelector={quote(text, safe='')}", f"labelSelector={text}"):
            parsed = URL.build(path="/", query_string=raw, encoded=True).query
            if list(parsed.items()) == [("labelSelector", text)]:
                found[raw] = model
    return found


_NAMESPACE_SEGMENT: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
"""A Kubernetes namespace name (an RFC 1123 label), which is its own path segment."""


@dataclass(frozen=True, slots=True)
class _Routes:
    """The handlers, closed over what they read."""

    store: DecisionStore
    metrics: SelfMetrics
    health: Health
    clock: Clock
    models_by_namespace: Mapping[str, frozenset[str]] | None
    discovery: tuple[bytes, bytes, bytes]
    # URL-decoded labelSelector -> the one model it selects, for the selectors that answer
    # with a rendered body ("model=<name>"); see _single_model_selectors.
    selected_by: Mapping[str, str]
    # The same questions by their raw query string (see _raw_queries).
    selected_by_query: Mapping[str, str]

    def group_list(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.discovery[0], headers=_JSON_HEADERS)

    def group(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.discovery[1], headers=_JSON_HEADERS)

    def resource_list(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.discovery[2], headers=_JSON_HEADERS)

    def value_list(self, request: web.Request) -> web.Response:
        """Any namespace and metric, as the path names them (the route with placeholders)."""
        return self._value_list(
            request,
            request.match_info["namespace"],
            request.match_info["metric"].lower(),  # the HPA lowercases metric names
        )

    def value_list_at(self, namespace: str, metric: str) -> Endpoint:
        """The value list of one served namespace and (lowercase) metric, for a route of its
        own: aiohttp resolves such a path by one dictionary lookup instead of a pattern
        match, and the HPA's question is then looked up by its raw query string."""
        served = () if self.models_by_namespace is None else self.models_by_namespace[namespace]
        # Only the models served here: elsewhere the general path answers (404).
        by_query = {q: m for q, m in self.selected_by_query.items() if m in served}
        answer, clock = self.store.answer, self.clock

        def endpoint(request: web.Request) -> web.Response:
            model = by_query.get(request.rel_url.raw_query_string)
            if model is not None:
                rendered = answer(model, metric)
                if rendered is not None and clock() <= rendered.fresh_until:
                    return web.Response(body=rendered.body, headers=_JSON_HEADERS)
            return self._value_list(request, namespace, metric)

        return endpoint

    def _value_list(self, request: web.Request, namespace: str, metric: str) -> web.Response:
        selector_text = request.query.get("labelSelector", "")
        # The HPA's question (model=<name>, in the model's namespace) is a lookup of the
        # body rendered when the decision was published; everything else takes the general
        # path below, which renders the same bytes for that question.
        model = self.selected_by.get(selector_text)
        if model is not None:
            rendered = self.store.answer(model, metric)
            if (
                rendered is not None
                and self.clock() <= rendered.fresh_until
                and (
                    self.models_by_namespace is None
                    or model in self.models_by_namespace.get(namespace, ())
                )
            ):
                return web.Response(body=rendered.body, headers=_JSON_HEADERS)
        return self._general_value_list(namespace, metric, selector_text)

    def _general_value_list(self, namespace: str, metric: str, selector_text: str) -> web.Response:
        """Any selector, any number of models: parse, select, read each value, render."""
        now = self.clock()
        if metric not in _KNOWN_METRICS:
            return status_response(
                404, f"the server could not find the metric {metric} for namespace {namespace}"
            )
        try:
            selector = parse_selector(selector_text)
        except SelectorError as exc:
            return status_response(400, str(exc))
        if self.models_by_namespace is None:
            in_namespace: frozenset[str] | tuple[str, ...] = self.store.models
        else:
            in_namespace = self.models_by_namespace.get(namespace, frozenset())
        wanted = selector.candidates(MODEL_LABEL)
        if wanted is not None:
            models = sorted(m for m in wanted if m in in_namespace)
        else:
            models = sorted(in_namespace)
        selected = [m for m in models if selector.matches({MODEL_LABEL: m})]
        if not selected:
            return status_response(
                404,
                f"the server could not find the metric {metric} for namespace {namespace}"
                f" and selector {selector_text!r}",
            )
        items = []
        for model in selected:
            try:
                value = self.store.value(metric, model, now)
            except StaleMetricError:
                # Generic on purpose (as prometheus-adapter): the HPA holds on any error.
                return status_response(
                    503, f"unable to fetch metric {metric} for model {model}: no fresh data"
                )
            except UnknownMetricError:
                return status_response(
                    404, f"the server could not find the metric {metric} for model {model}"
                )
            items.append(render_item(metric, model, value.value, value.timestamp))
        return web.Response(body=render_value_list(items), headers=_JSON_HEADERS)

    def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def readyz(self, _request: web.Request) -> web.Response:
        if not self.health.ready:
            return status_response(503, "not ready: no control tick has succeeded yet")
        return web.Response(text="ok")

    def self_metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = EXPOSITION_CONTENT_TYPE
        return response

    def decisions(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(DEFAULT_DECISIONS_LIMIT))
        try:
            limit = int(raw)
            if limit < 0:
                raise ValueError
        except ValueError:
            return status_response(400, f"limit must be a non-negative integer, got {raw!r}")
        recent = [d.to_json() for d in self.store.recent(limit)]
        return web.Response(body=_dumps({"decisions": recent}), content_type=_JSON)

    def not_found(self, request: web.Request) -> web.Response:
        return status_response(
            404, f"the server could not find the requested resource {request.path}"
        )


Endpoint = Callable[[web.Request], web.Response]
"""A route's own work: synchronous, since every answer comes from memory."""


def _guard(
    endpoint: Endpoint, template: str, authenticator: Authenticator, metrics: SelfMetrics
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a route: authentication, latency by route template, errors as Status objects.

    A wrapper per route rather than an aiohttp middleware: a middleware costs two extra
    coroutine layers per request (aiohttp adds its own current-app one), which was a fifth
    of the hot path; and the public/private decision is made once here, not per request.
    """
    public = authenticator.is_public(template)

    async def guarded(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            if not public:
                request[USER_KEY] = authenticator.authenticate(
                    client_common_name=client_common_name(request), headers=request.headers
                )
            response = endpoint(request)
        except AuthenticationError as exc:
            response = status_response(401, f"Unauthorized: {exc}")
        except Exception:
            log.exception("api_request_failed", method=request.method, path=request.path)
            response = status_response(500, "internal error while serving the request")
        metrics.observe_api_request(template, response.status, time.perf_counter() - started)
        return response

    return guarded


def _method_not_allowed(request: web.Request) -> web.Response:
    response = status_response(405, f"Method Not Allowed: {request.method} {request.path}")
    response.headers["Allow"] = "GET, HEAD"
    return response


def build_app(
    *,
    store: DecisionStore,
    metrics: SelfMetrics,
    health: Health,
    authenticator: Authenticator,
    clock: Clock = time.time,
    namespaces: Mapping[str, str] | None = None,
    status: StatusPage | None = None,
) -> web.Application:
    """The API application. `namespaces` maps each model to the namespace it is served in.

    Without `namespaces`, every model is served in every namespace (dry runs, tests). With
    `status`, /status is served too (``scaler.api.status``).
    """
    by_namespace: dict[str, set[str]] | None = None
    if namespaces is not None:
        by_namespace = {}
        for model, namespace in namespaces.items():
            by_namespace.setdefault(namespace, set()).add(model)
    selected_by = _single_model_selectors(store.models)
    routes = _Routes(
        store=store,
        metrics=metrics,
        health=health,
        clock=clock,
        models_by_namespace=(
            None if by_namespace is None else {k: frozenset(v) for k, v in by_namespace.items()}
        ),
        discovery=_discovery_bodies(),
        selected_by=selected_by,
        selected_by_query=_raw_queries(selected_by),
    )
    # Each served namespace's metrics get routes of their own (see _Routes.value_list_at);
    # the route with placeholders takes any other path (other namespaces, other spellings).
    value_lists = (
        (f"/apis/{GROUP_VERSION}/namespaces/{namespace}/{metric}", namespace, metric)
        for namespace in (by_namespace or ())
        if _NAMESPACE_SEGMENT.fullmatch(namespace)
        for metric in EXTERNAL_METRICS
    )
    served: tuple[tuple[str, Endpoint], ...] = (
        ("/apis", routes.group_list),
        ("/apis/", routes.group_list),  # the Python client's ApisApi asks here
        (f"/apis/{GROUP}", routes.group),
        (f"/apis/{GROUP_VERSION}", routes.resource_list),
        (VALUE_LIST_PATH, routes.value_list),
        ("/healthz", routes.healthz),
        ("/livez", routes.healthz),
        ("/readyz", routes.readyz),
        ("/metrics", routes.self_metrics),
        ("/debug/decisions", routes.decisions),
        *(() if status is None else ((STATUS_PATH, status.endpoint),)),
        # The aggregator downloads OpenAPI specs and skips a 404 gracefully.
        ("/openapi/v2", routes.not_found),
        ("/openapi/v3", routes.not_found),
    )
    app = web.Application()
    routed = [
        *((path, path, endpoint) for path, endpoint in served),
        # Latency is labelled by the route with placeholders, whichever route answered.
        *(
            (path, VALUE_LIST_PATH, routes.value_list_at(namespace, metric))
            for path, namespace, metric in value_lists
        ),
    ]
    for path, template, endpoint in routed:
        app.router.add_get(path, _guard(endpoint, template, authenticator, metrics))
        app.router.add_route(
            "*", path, _guard(_method_not_allowed, template, authenticator, metrics)
        )
    # Last: everything no route above takes is a 404 Status (aiohttp's own would be text).
    app.router.add_route(
        "*", "/{tail:.*}", _guard(routes.not_found, "unmatched", authenticator, metrics)
    )
    return app


@dataclass(frozen=True, slots=True)
class ApiEndpoint:
    """Where a started server listens (the real port when 0 was asked for)."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


DEFAULT_LIMITS: Final = ConnectionLimits()
"""The API's connection bounds: 256 connections, 10 s TLS handshake, 30 s keep-alive."""


@contextlib.asynccontextmanager
async def serve_api(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    shutdown_timeout: float = 10.0,
    close_grace: float = 1.0,
    limits: ConnectionLimits = DEFAULT_LIMITS,
) -> AsyncIterator[ApiEndpoint]:
    """Serve `app` until the block exits, then shut down gracefully.

    The listener bounds connections (`limits`: count, TLS handshake and keep-alive time, line
    and header sizes) and answers what the HTTP parser refuses with a Status, see
    ``scaler.api.listener``. Signals are left to the caller (the CLI's loop). On exit the
    listener closes first and requests in flight get up to `shutdown_timeout` seconds; then
    TLS connections get `close_grace` seconds to finish their close_notify exchange before
    they are aborted, so no socket outlives the server. The cleanup is shielded: a cancelled
    caller still closes.
    """
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = ListenerSite(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            limits=limits,
            error_body=status_response,
        )
        await site.start()
        bound = runner.addresses[0]
        yield ApiEndpoint(host=str(bound[0]), port=int(bound[1]), tls=ssl_context is not None)
    finally:
        await asyncio.shield(_stop(runner, close_grace))


async def _stop(runner: web.AppRunner, close_grace: float) -> None:
    for site in list(runner.sites):  # stop listening first, so the list below is complete
        await site.stop()
    server = runner.server
    # Raw sockets are taken before cleanup: a TLS transport detaches from its socket once
    # closed, and then no longer answers get_extra_info.
    connections = [
        (transport, sock)
        for c in (server.connections if server is not None else [])
        if (transport := c.transport) is not None
        and (sock := transport.get_extra_info("socket")) is not None
    ]
    await runner.cleanup()
    # A closed TLS transport waits for the peer's close_notify; a peer that never sends it
    # (a client holding its pooled connection) would keep the socket open past the server's
    # life. Bounded wait, then abort.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + close_grace
    while any(s.fileno() != -1 for _, s in connections) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for transport, sock in connections:
        if sock.fileno() != -1:
            with contextlib.suppress(AttributeError):  # detached in the meantime
                transport.abort()
    await asyncio.sleep(0)  # let the aborted transports run connection_lost
