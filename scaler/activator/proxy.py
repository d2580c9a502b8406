"""The activator's reverse proxy: route, hold while cold, forward and stream back unchanged.

Between ingress-nginx and the model Services. A request is routed (``routes``), its body read
up to ``max_body_bytes`` (413 beyond), admitted by its model's gate (``queue``: straight
through while warm, held while cold, 503 on a full queue or a timeout), then forwarded with
its method, path (less a routing prefix), query, headers (less hop-by-hop ones) and body. The
response comes back with its status and headers (less hop-by-hop ones), and its body is
written to the client chunk by chunk as it arrives, so server-sent events stream through.

Upstream connections are pooled, but llama-server closes some without notice (after an event
stream, and beyond its fixed HTTP threads): an event stream's connection is not pooled, and a
request whose pooled connection turns out closed before any answer is sent once more on a new
connection.

Errors the activator produces itself are OpenAI-shaped (``{"error": {"message", "type",
"code"}}``) so OpenAI clients show them; errors from the model server pass through untouched.

``/metrics``, ``/healthz`` and ``/readyz`` are the activator's own, except on a Host routed to
a model, where every path is the model's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import unquote

import aiohttp
import structlog
from aiohttp import ClientResponse, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from scaler.activator.endpoints import EndpointTracker, HealthProbe
from scaler.activator.metrics import CONTENT_TYPE, ActivatorMetrics, RejectReason
from scaler.activator.queue import (
    HoldTimeoutError,
    ModelGate,
    QueueFullError,
    StoppingError,
    Turn,
    WakeHook,
)
from scaler.activator.routes import RouteMatch, RouteTable
from scaler.api.listener import ConnectionLimits, ListenerSite

log = structlog.get_logger("scaler.activator")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded (plus the legacy
# Proxy-Connection and Keep-Alive that some clients still send).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_READ_CHUNK = 64 * 1024
UPSTREAM_KEEPALIVE_S = 4.0
"""Longest an idle upstream connection is kept for reuse (below the servers' own 5 s)."""
# Never taken from the client: the client library sets Host and Content-Length for the
# upstream, and X-Forwarded-Prefix is the activator's own statement of the prefix it stripped
# (a client's would tell the model server a prefix of its choosing).
_SET_BY_US = frozenset({"host", "content-length", "x-forwarded-prefix"})


@dataclass(frozen=True, slots=True)
class ActivatorConfig:
    """Limits and timings of one activator."""

    max_body_bytes: int = 4 * 1024 * 1024  # a 16k-token prompt is ~64 KiB; images need more
    queue_size: int = 256  # held requests per model; memory ≤ queue_size × max_body_bytes
    connect_timeout_s: float = 5.0  # to a model server that is said to be ready
    probe_interval_s: float = 0.25  # /health retries after a cold start
    dispatch_timeout_s: float = 5.0  # longest a released request delays the next one


def openai_error(
    status: int, message: str, *, type_: str, code: str, retry_after_s: int | None = None
) -> web.Response:
    """An error response in the OpenAI API's shape, which OpenAI client libraries display."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    body = {"error": {"message": message, "type": type_, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def listener_error(status: int, message: str) -> web.Response:
    """An error the listener answers itself (malformed HTTP, ``OPTIONS *``), OpenAI-shaped."""
    if status >= 500:
        return openai_error(status, message, type_="server_error", code="internal_error")
    return openai_error(status, message, type_="invalid_request_error", code="bad_request")


LISTENER_LIMITS = ConnectionLimits(
    # Held requests (up to --queue-size per model) and streams each hold a connection; a
    # plain-HTTP connection costs a few KiB, so the cap is generous.
    max_connections=4096,
    # Longer than ingress-nginx's upstream keep-alive (60 s), so nginx closes first and never
    # reuses a connection the activator is closing.
    keepalive_timeout_s=75.0,
    max_field_size=16 * 1024,  # long cookies and bearer tokens
    backlog=1024,
)


def forwarded_request_headers(request: web.BaseRequest, match: RouteMatch) -> CIMultiDict[str]:
    """The client's headers as the model server gets them: hop-by-hop ones, Host,
    Content-Length and X-Forwarded-Prefix removed, X-Forwarded-For/-Host/-Proto added where
    the ingress has not set them already, X-Forwarded-Prefix set when a prefix was stripped."""
    headers: CIMultiDict[str] = CIMultiDict()
    drop = _connection_tokens(request.headers.getall("Connection", ()))
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in drop or lowered in _SET_BY_US:
            continue
        headers.add(name, value)
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    if "X-Forwarded-Host" not in headers and request.host:
        headers["X-Forwarded-Host"] = request.host
    if "X-Forwarded-Proto" not in headers:
        headers["X-Forwarded-Proto"] = request.scheme
    if match.stripped_prefix:
        headers["X-Forwarded-Prefix"] = match.stripped_prefix
    return headers


def _has_dot_segment(raw_path: str) -> bool:
    """Whether a raw path has a ``.`` or ``..`` segment, percent-encoded ones included."""
    return any(
        unquote(segment) in (".", "..") for segment in raw_path.replace("\\", "/").split("/")
    )


def _connection_tokens(values: Iterable[str]) -> frozenset[str]:
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


@dataclass(slots=True)
class _Attempt:
    """One try at sending a request upstream (the trace context of its request)."""

    turn: Turn
    reused: bool = False  # sent on a pooled connection


async def _headers_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: object
) -> None:
    # The request is on the wire: the next held request may go (keeps arrival order).
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.turn.dispatched()


async def _connection_reused(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: object
) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


# What aiohttp raises when the server closed a connection before answering on it: the write
# failed ("Can not write request body") or the connection ended before a status line.
_CLOSED_BEFORE_ANSWER = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class Activator:
    """The proxy: routes, one gate per model, metrics, and the client session to upstreams."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        tracker: EndpointTracker,
        config: ActivatorConfig = ActivatorConfig(),
        wake: WakeHook | None = None,
    ) -> None:
        self.routes = routes
        self.tracker = tracker
        self.config = config
        self.metrics = ActivatorMetrics(tuple(r.model for r in routes))
        self._wake = wake
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None
        self.gates: dict[str, ModelGate] = {}
        self.stopping = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client session to model servers (exists between ``start`` and ``close``)."""
        if self._session is None:
            raise RuntimeError("Activator.start() has not run")
        return self._session

    async def start(self) -> None:
        """Open the upstream session and the per-model gates (inside the event loop)."""
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_headers_sent)
        trace.on_connection_reuseconn.append(_connection_reused)

        def session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.config.connect_timeout_s
                ),
                auto_decompress=False,  # bytes pass through as the server encoded them
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry a client's cookies to another
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                trace_configs=[trace],
            )

        # No connection limit: a held queue may release hundreds of streams at once. Idle
        # connections are dropped before the model servers drop them (llama-server and vLLM's
        # uvicorn after 5 s): reusing one the server is closing fails the request.
        self._session = session(
            aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE_S)
        )
        # For the one retry of a request whose pooled connection the server had closed.
        self._fresh_session = session(aiohttp.TCPConnector(limit=0, force_close=True))
        probe = HealthProbe(self._session)
        self.gates = {
            r.model: ModelGate(
                route=r,
                tracker=self.tracker,
                probe=probe,
                metrics=self.metrics,
                capacity=self.config.queue_size,
                wake=self._wake,
                probe_interval_s=self.config.probe_interval_s,
                dispatch_timeout_s=self.config.dispatch_timeout_s,
            )
            for r in self.routes
        }

    async def close(self) -> None:
        """Stop the gates and close the upstream session."""
        for gate in self.gates.values():
            await gate.close()
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()
        self._session = self._fresh_session = None

    def app(self) -> web.Application:
        """The aiohttp application: one catch-all handler (routing is by Host and prefix)."""
        app = web.Application(handler_args={"max_field_size": 16 * 1024})
        app.router.add_route("*", "/{tail:.*}", self.handle)

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.close()

        async def stop_holding(_app: web.Application) -> None:
            # on_shutdown runs after the listening socket closed and before in-flight
            # handlers are awaited: held requests get a 503 now, streams may finish.
            self.stopping = True
            for gate in self.gates.values():
                gate.stop_holding()

        app.cleanup_ctx.append(lifecycle)
        app.on_shutdown.append(stop_holding)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request: the activator's own endpoints, or route, hold and forward."""
        raw_path, _, query = request.raw_path.partition("?")
        if _has_dot_segment(raw_path):
            # /mixtral-8x7b/../../admin would reach the model server as /../../admin.
            return openai_error(
                400,
                "the path has a '.' or '..' segment; send it normalised",
                type_="invalid_request_error",
                code="bad_request",
            )
        if self.routes.by_host(request.host) is None:
            own = self._own_endpoint(request, raw_path)
            if own is not None:
                return own
        match = self.routes.match(request.host, raw_path)
        if match is None:
            return openai_error(
                404,
                f"no model is routed for host {request.host!r} and path {raw_path!r}",
                type_="invalid_request_error",
                code="model_not_routed",
            )
        model = match.route.model
        body = await self._read_body(request)
        if body is None:
            self.metrics.rejected.labels(model=model, reason=RejectReason.BODY_TOO_LARGE).inc()
            log.info("rejected", model=model, reason=RejectReason.BODY_TOO_LARGE.value)
            return openai_error(
                413,
                f"request body is larger than {self.config.max_body_bytes} bytes",
                type_="invalid_request_error",
                code="request_too_large",
            )
        gate = self.gates[model]
        try:
            turn = await gate.admit()
        except QueueFullError:
            return self._unavailable(
                model,
                RejectReason.QUEUE_FULL,
                f"model {model!r} is starting and {self.config.queue_size} requests are already"
                " waiting for it; retry later",
            )
        except StoppingError:
            return self._unavailable(
                model,
                RejectReason.SHUTTING_DOWN,
                "the activator is shutting down; retry",
                retry_after_s=1,
            )
        except HoldTimeoutError:
            self.metrics.timeouts.labels(model=model).inc()
            return self._unavailable(
                model,
                RejectReason.TIMEOUT,
                f"model {model!r} did not become ready within"
                f" {match.route.hold_timeout_s:g} s; retry later",
            )
        if turn.held:
            log.info("released", model=model, held_s=round(turn.held_s, 3))
        try:
            path_and_query = f"{match.path}?{query}" if query else match.path
            return await self._forward(request, match, path_and_query, body, turn)
        finally:
            turn.dispatched()

    def _own_endpoint(self, request: web.Request, path: str) -> web.StreamResponse | None:
        if path == "/metrics" and request.method == "GET":
            return web.Response(
                body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE}
            )
        if path == "/healthz" and request.method == "GET":
            return web.Response(text="ok")
        if path == "/readyz" and request.method == "GET":
            # Ready as soon as it serves (holding requests for cold models is its job), until
            # it starts shutting down.
            if self.stopping:
                return web.Response(status=503, text="stopping")
            return web.Response(text="ok")
        return None

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole request body, or None when it is above the limit (read no further)."""
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    def _unavailable(
        self, model: str, reason: RejectReason, message: str, *, retry_after_s: int | None = None
    ) -> web.Response:
        self.metrics.rejected.labels(model=model, reason=reason).inc()
        route = self.gates[model].route
        log.warning("rejected", model=model, reason=reason.value, pending=self.gates[model].pending)
        return openai_error(
            503,
            message,
            type_="service_unavailable",
            code=f"model_{reason.value}",
            retry_after_s=route.retry_after_s if retry_after_s is None else retry_after_s,
        )

    async def _forward(
        self,
        request: web.Request,
        match: RouteMatch,
        path_and_query: str,
        body: bytes,
        turn: Turn,
    ) -> web.StreamResponse:
        model = match.route.model
        url = URL(str(match.route.upstream) + path_and_query, encoded=True)
        headers = forwarded_request_headers(request, match)

        async def send(session: aiohttp.ClientSession, attempt: _Attempt) -> ClientResponse:
            return await session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                trace_request_ctx=attempt,
            )

        try:
            first = _Attempt(turn)
            try:
                upstream = await send(self.session, first)
            except _CLOSED_BEFORE_ANSWER as exc:
                if not first.reused or self._fresh_session is None:
                    raise
                # The server had closed the pooled connection: llama-server does so without
                # notice after an event stream and for connections beyond its fixed HTTP
                # threads. Reused as the close arrived, it got no answer (a 502 for 3 % of the
                # requests of 12 busy clients mixing streams and plain requests,
                # tests/integration/test_activator_llamacpp.py), so send it once more on a new
                # connection. A completion has no effect but its answer: even a request that
                # did arrive is safe to repeat.
                log.debug("upstream_connection_closed_retry", model=model, error=repr(exc))
                upstream = await send(self._fresh_session, _Attempt(turn))
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Refused, reset, or an answer that is not HTTP: no response to pass on.
            self.metrics.rejected.labels(
                model=model, reason=RejectReason.UPSTREAM_UNREACHABLE
            ).inc()
            log.warning("upstream_unreachable", model=model, url=str(url), error=repr(exc))
            return openai_error(
                502,
                f"model {model!r} is not reachable at {match.route.upstream}: {exc}",
                type_="service_unavailable",
                code="model_unreachable",
            )
        async with upstream:
            turn.dispatched()
            self.metrics.forwarded.labels(model=model).inc()
            if _is_event_stream(upstream.headers) and upstream.connection is not None:
                # llama-server closes the connection after an event stream while its headers
                # say keep-alive; pooled, the next request on it fails and is sent again (see
                # above). A stream still arriving can be kept out of the pool beforehand (a
                # short one ended with its headers was pooled already). A stream is long
                # enough for a new connection to cost nothing.
                protocol = upstream.connection.protocol
                if protocol is not None:
                    protocol.force_close()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            drop = _connection_tokens(upstream.headers.getall("Connection", ()))
            for name, value in upstream.headers.items():
                lowered = name.lower()
                if lowered not in HOP_BY_HOP and lowered not in drop:
                    response.headers.add(name, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)  # as it arrives: SSE must not be buffered
            except aiohttp.ClientPayloadError as exc:
                # The server died mid-stream. The status is already sent: end the connection
                # without the final chunk so the client sees a truncated response, not a
                # complete one.
                log.warning("upstream_stream_broken", model=model, error=repr(exc))
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            return response


def _is_event_stream(headers: CIMultiDictProxy[str]) -> bool:
    content_type = headers.get("Content-Type", "")
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0, drain_s: float = 1.0
) -> AsyncIterator[URL]:
    """Run `app` on host:port (0 picks a free port) and yield its base URL.

    Handler cancellation is on: a client that disconnects cancels its handler, which is how a
    held request leaves the queue. The listener bounds connections (`LISTENER_LIMITS`) and
    answers malformed HTTP OpenAI-shaped, with one log line at most every 10 s
    (``scaler.api.listener``). At exit, responses in flight (streams) get `drain_s`
    seconds to finish before they are cut.
    """
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=drain_s,
    )
    await runner.setup()
    try:
        site = ListenerSite(runner, host, port, limits=LISTENER_LIMITS, error_body=listener_error)
        await site.start()
        sockets = runner.addresses
        bound_port = sockets[0][1] if sockets else port
        yield URL.build(scheme="http", host=host, port=bound_port)
    finally:
        await asyncio.shield(runner.cleanup())
