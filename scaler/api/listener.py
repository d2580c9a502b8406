"""The listening socket of an aiohttp server, bounded against clients that hold without asking.

aiohttp's own ``TCPSite`` has no cap on open connections, lets a TLS handshake hang for 60 s
and keeps an idle connection for an hour (``keepalive_timeout`` 3630 s). Each TLS connection
costs about 270 KiB from the moment it is accepted (asyncio's SSL protocol allocates a 256 KiB
read buffer per connection), so a few hundred idle connections, no credentials needed, were
enough to take the adapter past its 256 Mi memory limit. `ListenerSite` replaces ``TCPSite``:

- it accepts connections itself, so it can count them *before* any TLS state exists. When
  `ConnectionLimits.max_connections` are open, a new connection makes room by evicting the
  oldest connection still in its TLS handshake, else the connection idle the longest
  between requests; when every connection is in a request, the new one is closed at once.
  So idle clients cannot lock real ones out, and memory stays bounded either way (the
  client evicted reconnects, as it would after a keep-alive timeout);
- the TLS handshake must finish within ``handshake_timeout_s``; an established connection
  with no request for ``keepalive_timeout_s`` is closed (also before its first request);
- request lines and header fields have explicit limits (``max_line_size``,
  ``max_field_size``);
- a request the HTTP parser refuses (a NUL in a header, a line over the limit, not HTTP at
  all), and anything else aiohttp answers itself (its router's 404 for ``OPTIONS *``, a
  ``CONNECT``), is answered with the caller's own error body (`ErrorBody`: a
  ``metav1.Status`` on the adapter, an OpenAI error on the activator), and logged as one
  JSON line at most every `LOG_EVERY_SECONDS` with a count of the ones left out; never a
  traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from scaler.api.auth import common_name_of

log = structlog.get_logger("scaler.api.listener")

LOG_EVERY_SECONDS: Final = 10.0
"""Longest a listener stays silent about refused requests and connections it saw."""

ErrorBody = Callable[[int, str], web.Response]
"""Builds the response for an error the listener answers itself: (HTTP status, message)."""

# aiohttp's handler logs parse errors with a traceback through this logger; every message it
# would print is replaced by RateLimitedLog lines (see _BoundedRequestHandler), so it is muted.
_AIOHTTP_LOG: Final = logging.getLogger("scaler.api.listener.aiohttp")
_AIOHTTP_LOG.addHandler(logging.NullHandler())
_AIOHTTP_LOG.propagate = False


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one listener lets its clients hold.

    The defaults keep 256 TLS connections, about 70 MiB, within the adapter's 256 Mi limit
    next to its ~100 MiB at rest. ``max_line_size`` fits the request line of the longest
    selector the API accepts (4,096 characters, percent-encoded: up to 12 KiB).
    """

    max_connections: int = 256
    handshake_timeout_s: float = 10.0
    keepalive_timeout_s: float = 30.0  # idle time allowed between requests, and before the first
    # A closed TLS connection waits this long for the peer's close_notify (asyncio: 30 s),
    # holding its socket and buffer; a peer that never answers must not hold them long.
    tls_shutdown_timeout_s: float = 2.0
    max_line_size: int = 16 * 1024
    max_field_size: int = 8190
    backlog: int = 128

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")


_M_MMAP_THRESHOLD: Final = -3  # glibc mallopt parameter (malloc.h)


def return_freed_connection_memory() -> bool:
    """Make glibc give each connection's TLS read buffer back to the system when it closes.

    asyncio allocates a 256 KiB buffer per TLS connection. glibc serves blocks that large
    with mmap, but after the first one is freed it raises its mmap threshold above them, and
    from then on they come from the heap, which fragments and never shrinks: a burst of
    idle connections left the adapter ~100 MiB bigger for good. A fixed threshold (128 KiB,
    glibc's own initial value) keeps them mmapped, so closing a connection frees its buffer.
    Returns whether it applied (False off glibc, e.g. musl or macOS).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 128 * 1024))


class RateLimitedLog:
    """One warning line per `every` seconds per event, carrying how many were left out."""

    def __init__(self, *, every: float = LOG_EVERY_SECONDS, clock: Callable[[], float]) -> None:
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, **fields: object) -> None:
        """Log `event` unless it was logged less than `every` seconds ago (then count it)."""
        now = self._clock()
        last = self._last.get(event)
        if last is not None and now - last < self._every:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return
        self._last[event] = now
        suppressed = self._suppressed.pop(event, 0)
        log.warning(event, **fields, suppressed_since_last=suppressed)


def _describe(exc: BaseException | None, status: int) -> str:
    """A short reason for a refused request that echoes none of the client's bytes."""
    if isinstance(exc, LineTooLong):
        return "request line or header field too long"
    if isinstance(exc, HttpProcessingError):
        return f"malformed HTTP request ({type(exc).__name__})"
    if status >= 500:
        return "internal error while reading the request"
    return "bad request"


class _BoundedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, answering the errors it makes itself with `ErrorBody`."""

    __slots__ = ("_common_name", "_error_body", "_rate_log", "busy", "last_active")

    def __init__(
        self,
        manager: web.Server,
        *,
        error_body: ErrorBody,
        rate_log: RateLimitedLog,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._error_body = error_body
        self._rate_log = rate_log
        self.busy = False  # request bytes arrived and its response is not finished yet
        self.last_active = time.monotonic()
        self._common_name: tuple[str | None] | None = None  # not read yet

    @property
    def client_common_name(self) -> str | None:
        """The verified client certificate's subject CN (``common_name_of``), read on the
        first request and kept: the handshake fixed it for the connection's life."""
        if self._common_name is None:
            transport = self.transport
            peer = None if transport is None else transport.get_extra_info("peercert")
            self._common_name = (common_name_of(peer),)
        return self._common_name[0]

    def data_received(self, data: bytes) -> None:
        """Note the activity (for eviction), then parse as aiohttp does."""
        self.busy = True
        self.last_active = time.monotonic()
        super().data_received(data)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The parser refused the request (or aiohttp caught an error): our body, one line."""
        self._rate_log.warning(
            "http_request_refused",
            status=status,
            error=type(exc).__name__ if exc is not None else None,
            remote=request.remote,
        )
        if request.writer.output_size > 0:  # as aiohttp: the response is already going out
            raise ConnectionError("response already started, cannot send the error")
        response = self._error_body(status, _describe(exc, status))
        response.force_close()
        return response

    def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        """Replace aiohttp's plain-text answers (its router's, for paths no route can take,
        such as ``OPTIONS *``) by `ErrorBody`. Not a coroutine itself: no extra frame per
        request on the hot path."""
        self.busy = False  # the handler is done: the response only remains to be written
        self.last_active = time.monotonic()
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            text = "the server could not find the requested resource"
            if resp.status == 405:
                text = f"method {request.method} is not allowed here"
            elif resp.status != 404:
                text = resp.reason
            resp = self._error_body(resp.status, text)
        return super().finish_response(request, resp, start_time)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's 'Unhandled exception' path: one rate-limited line, no traceback."""
        exc = kw.get("exc_info")
        self._rate_log.warning(
            "http_connection_error",
            error=type(exc).__name__ if isinstance(exc, BaseException) else str(args[:1]),
        )


def client_common_name(request: BaseRequest) -> str | None:
    """Subject CN of the client certificate verified on `request`'s connection (None without
    one, or without TLS; "" for a certificate without a CN): once per connection on a
    `ListenerSite`, from the TLS transport on any other server (tests' ``TestServer``)."""
    protocol = request.protocol
    if isinstance(protocol, _BoundedRequestHandler):
        return protocol.client_common_name
    transport = request.transport
    return None if transport is None else common_name_of(transport.get_extra_info("peercert"))


class _Listener:
    """The listening socket and its accept task; what BaseSite keeps as its ``_server``."""

    def __init__(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self.sockets = (sock,)
        self.task = task

    def close(self) -> None:
        self.task.cancel()
        self.sockets[0].close()


class ListenerSite(web.BaseSite):
    """A TCP (optionally TLS) site for an `AppRunner` with bounded connections (see module)."""

    __slots__ = (
        "_accepted",
        "_error_body",
        "_factory_kwargs",
        "_handshakes",
        "_host",
        "_limits",
        "_port",
        "_rate_log",
    )

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        error_body: ErrorBody,
        ssl_context: ssl.SSLContext | None = None,
        limits: ConnectionLimits = ConnectionLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=limits.backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._error_body = error_body
        self._rate_log = RateLimitedLog(clock=clock)
        # Every accepted socket not yet seen closed, oldest first; the value is its TLS
        # handshake while that runs, then its protocol. A transport closes its socket when it
        # is done, so a socket whose fileno() is -1 is a connection that ended.
        self._accepted: dict[socket.socket, asyncio.Task[None] | _BoundedRequestHandler] = {}

    @property
    def name(self) -> str:
        """The site's URL, as aiohttp's sites name themselves."""
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    @property
    def open_connections(self) -> int:
        """Connections accepted and not closed yet (handshaking ones included)."""
        self._prune()
        return len(self._accepted)

    async def start(self) -> None:
        """Bind, listen and start accepting."""
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family, backlog=self._backlog)
        sock.setblocking(False)
        task = asyncio.create_task(self._accept(sock), name=f"accept {self.name}")
        self._server = _Listener(sock, task)  # type: ignore[assignment]

    async def stop(self) -> None:
        """Stop accepting and abandon handshakes; established connections are the runner's."""
        listener = self._server
        await super().stop()  # closes the listener
        if isinstance(listener, _Listener):
            with contextlib.suppress(asyncio.CancelledError):
                await listener.task
        for handshake in [t for t in self._accepted.values() if isinstance(t, asyncio.Task)]:
            handshake.cancel()

    def _prune(self) -> None:
        for sock in [s for s in self._accepted if s.fileno() == -1]:
            del self._accepted[sock]

    def _make_handler(self) -> _BoundedRequestHandler:
        server = self._runner.server
        assert server is not None, "the runner is set up before its site starts"
        return _BoundedRequestHandler(
            server,
            error_body=self._error_body,
            rate_log=self._rate_log,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=self._limits.keepalive_timeout_s,
            max_line_size=self._limits.max_line_size,
            max_field_size=self._limits.max_field_size,
            logger=_AIOHTTP_LOG,
            access_log=None,
        )

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _address = await loop.sock_accept(sock)
            except OSError as exc:  # out of file descriptors, a reset before accept: go on
                self._rate_log.warning("accept_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            if not self._make_room():
                self._rate_log.warning(
                    "connection_refused",
                    reason="connection limit reached",
                    max_connections=self._limits.max_connections,
                )
                with contextlib.suppress(OSError):
                    conn.close()
                continue
            if self._ssl_context is None:
                await self._connect(conn)
            else:
                self._accepted[conn] = asyncio.create_task(self._connect(conn))
            # sock_accept does not yield while connections are pending: let an evicted
            # handshake close its socket before the next accept, or sockets pile up past
            # the cap during a burst.
            await asyncio.sleep(0)

    def _make_room(self) -> bool:
        """Whether one more connection may be accepted, evicting one if need be."""
        if len(self._accepted) < self._limits.max_connections:
            return True
        self._prune()
        if len(self._accepted) < self._limits.max_connections:
            return True
        idlest: tuple[float, socket.socket, _BoundedRequestHandler] | None = None
        for sock, held in self._accepted.items():
            if isinstance(held, asyncio.Task):
                held.cancel()  # its transport closes the socket
                del self._accepted[sock]
                self._evicted("the oldest TLS handshake")
                return True
            if not held.busy and (idlest is None or held.last_active < idlest[0]):
                idlest = (held.last_active, sock, held)
        if idlest is None:
            return False
        _, sock, handler = idlest
        if handler.transport is not None:
            handler.transport.abort()  # at once: no TLS goodbye that could hang on the peer
        handler.force_close()
        del self._accepted[sock]
        self._evicted("the connection idle the longest")
        return True

    def _evicted(self, which: str) -> None:
        self._rate_log.warning(
            "connection_evicted",
            reason=f"connection limit reached: {which} makes room",
            max_connections=self._limits.max_connections,
        )

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._ssl_context is None:
                _, protocol = await loop.connect_accepted_socket(self._make_handler, conn)
            else:
                _, protocol = await loop.connect_accepted_socket(
                    self._make_handler,
                    conn,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=self._limits.handshake_timeout_s,
                    ssl_shutdown_timeout=self._limits.tls_shutdown_timeout_s,
                )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:  # handshake failed or timed out, peer gone: never a stray traceback
            conn.close()
            return
        self._accepted[conn] = protocol
