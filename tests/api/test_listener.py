"""The bounded listener under clients that hold connections or send malformed HTTP.

Real servers (`serve_api` on loopback, TLS with a generated certificate), real sockets; the
memory test runs `scaler serve` as a process and reads its RSS from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from scaler.api.listener import ConnectionLimits, ListenerSite
from scaler.api.selector import MAX_SELECTOR_LENGTH
from scaler.api.server import ApiEndpoint, status_response
from scaler.api.tls import serving_ssl_context
from tests.api.conftest import MODELS, Wiring, make_decision
from tests.builders import POLICIES

CLOSE = b"Connection: close\r\n\r\n"
DESIRED = "/apis/external.metrics.k8s.io/v1beta1/namespaces/cortex/scaler-desired-replicas"


def client_context() -> ssl.SSLContext:
    """A TLS client context that trusts anything (the server's certificate is generated)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.asynccontextmanager
async def api(
    wiring: Wiring, limits: ConnectionLimits, *, tls: bool = True
) -> AsyncIterator[tuple[ApiEndpoint, ListenerSite]]:
    """The API app on a ListenerSite with `limits` (TLS with a generated certificate unless
    `tls` is false); yields where it listens and the site."""
    for model in MODELS:
        wiring.store.publish(make_decision(model))
    context = serving_ssl_context()[0] if tls else None
    runner = web.AppRunner(wiring.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = ListenerSite(
        runner, "127.0.0.1", 0, ssl_context=context, limits=limits, error_body=status_response
    )
    try:
        await site.start()
        port = int(runner.addresses[0][1])
        yield ApiEndpoint(host="127.0.0.1", port=port, tls=tls), site
    finally:
        await runner.cleanup()


async def raw_request(endpoint: ApiEndpoint, data: bytes) -> bytes:
    """Send `data` on a fresh connection and read the whole answer (read while writing: the
    server answers, then closes, before a long request is all sent)."""
    reader, writer = await asyncio.open_connection(
        endpoint.host, endpoint.port, ssl=client_context() if endpoint.tls else None
    )
    answer = b""

    async def read() -> None:
        nonlocal answer
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                answer += chunk

    reading = asyncio.create_task(read())
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        writer.write(data)
        await writer.drain()
    await asyncio.wait_for(reading, timeout=5)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return answer


def status_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of a raw HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


async def poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def healthz(endpoint: ApiEndpoint) -> int:
    """Status of GET /healthz on a fresh connection."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{endpoint.url}/healthz", ssl=client_context()) as response,
    ):
        return response.status


# --- connections


async def test_connections_beyond_the_cap_evict_handshakes_and_clients_still_get_in(
    wiring: Wiring,
) -> None:
    """300 idle TCP connections (no TLS handshake) against a cap of 40: never more than 40
    open, and a real client is still served (the oldest handshake makes room)."""
    limits = ConnectionLimits(max_connections=40, handshake_timeout_s=30)
    async with api(wiring, limits) as (endpoint, site):
        idle = [await asyncio.open_connection(endpoint.host, endpoint.port) for _ in range(300)]
        await asyncio.sleep(0.2)
        assert site.open_connections <= 40
        assert await healthz(endpoint) == 200
        for _, writer in idle:
            writer.close()


async def test_idle_established_connections_make_room_for_a_new_client(
    wiring: Wiring,
) -> None:
    """The cap filled with handshaken, idle connections: a new client is served, the
    connection idle the longest is the one closed."""
    limits = ConnectionLimits(max_connections=5, keepalive_timeout_s=30)
    async with api(wiring, limits) as (endpoint, site):
        held = []
        for _ in range(5):
            held.append(
                await asyncio.open_connection(endpoint.host, endpoint.port, ssl=client_context())
            )
            await asyncio.sleep(0.01)  # distinct last-activity times
        await asyncio.sleep(0.1)
        assert await healthz(endpoint) == 200
        oldest_reader = held[0][0]
        assert await asyncio.wait_for(oldest_reader.read(), timeout=5) == b""
        assert site.open_connections <= 5
        for _, writer in held:
            writer.close()


async def test_when_every_connection_is_in_a_request_a_new_one_is_refused(
    wiring: Wiring,
) -> None:
    """Every slot holds a request still arriving: a new connection is closed at once, and
    the requests in progress are answered when they complete."""
    limits = ConnectionLimits(max_connections=5, keepalive_timeout_s=30)
    partial = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    async with api(wiring, limits) as (endpoint, _site):
        held = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=client_context()
            )
            writer.write(partial)
            await writer.drain()
            held.append((reader, writer))
        await asyncio.sleep(0.2)
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, ssl=client_context()),
                timeout=5,
            )
        for reader, writer in held:
            writer.write(b"\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            assert answer.startswith(b"HTTP/1.1 200")
            writer.close()


async def test_a_connection_that_never_handshakes_is_closed(wiring: Wiring) -> None:
    """No ClientHello within the handshake timeout: the server closes the connection."""
    async with api(wiring, ConnectionLimits(handshake_timeout_s=0.3)) as (endpoint, site):
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert time.monotonic() - started < 3
        writer.close()
        await poll(lambda: site.open_connections == 0)


@pytest.mark.parametrize("requests", [0, 1])
async def test_an_idle_tls_connection_is_closed_after_the_keepalive_timeout(
    wiring: Wiring, requests: int
) -> None:
    """Handshaken, then silent (before or after a request): closed after keepalive_timeout."""
    async with api(wiring, ConnectionLimits(keepalive_timeout_s=0.3)) as (endpoint, site):
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=client_context()
        )
        if requests:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=5)  # EOF when the server closes
        assert time.monotonic() - started < 3
        assert answer.startswith(b"HTTP/1.1 200") if requests else answer == b""
        writer.close()
        await poll(lambda: site.open_connections == 0)


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid`, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def adapter_process(*flags: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`scaler serve --no-kubernetes` as a process (Prometheus unreachable); yields it and its
    URL once it logs ``serving``. Its stderr is collected for the caller at exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        "serve",
        "--policies",
        str(POLICIES),
        "--no-kubernetes",
        "--allow-anonymous",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-url",
        "http://127.0.0.1:9",
        "--interval",
        "1",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = await process.stdout.readline()
                assert line, "scaler serve exited before serving"
                entry = json.loads(line)
                if entry["event"] == "serving":
                    url = str(entry["url"])
        yield process, url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_many_idle_tls_connections_keep_the_adapter_process_small() -> None:
    """1,000 idle connections (600 silent, 400 handshaken) on `scaler serve`: it holds at most
    256 of them (file descriptors), its RSS grows by less than the cap's worth (256 × ~320
    KiB), not by 1,000 connections' (~300 MiB), and a new client is still served."""
    async with adapter_process() as (process, url):
        host, port = url.removeprefix("https://").rsplit(":", 1)
        pid = process.pid
        before = rss_kib(pid)
        fds_before = len(os.listdir(f"/proc/{pid}/fd"))
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(600)]
        tls = []
        for _ in range(400):
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                tls.append(
                    await asyncio.wait_for(
                        asyncio.open_connection(host, int(port), ssl=client_context()), 5
                    )
                )
        await asyncio.sleep(0.5)
        grown_mib = (rss_kib(pid) - before) / 1024
        fds = len(os.listdir(f"/proc/{pid}/fd")) - fds_before
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/healthz", ssl=client_context()) as response,
        ):
            assert response.status == 200
        for _, writer in (*idle, *tls):
            writer.close()
    assert fds <= 256
    assert grown_mib < 100, f"RSS grew by {grown_mib:.0f} MiB"


# --- malformed requests and errors aiohttp would answer itself


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, id="nul"),
        pytest.param(b"GET /" + b"a" * 16_500 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="16k"),
        pytest.param(
            b"GET /" + b"a" * 1_048_576 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="1m-url"
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9216 + b"\r\n\r\n",
            400,
            id="9k-header",
        ),
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n" + CLOSE, 404, id="options-star"),
        pytest.param(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n" + CLOSE, 404, id="connect"),
        pytest.param(b"\x16\x03\x01 not http\r\n\r\n", 400, id="garbage"),
    ],
)
async def test_every_error_on_the_api_port_is_a_status(
    wiring: Wiring, request_bytes: bytes, status: int
) -> None:
    """What the parser or aiohttp's router refuse is a metav1.Status, echoing no input."""
    async with api(wiring, ConnectionLimits(), tls=False) as (endpoint, _site):
        got, body = status_of(await raw_request(endpoint, request_bytes))
    assert got == status
    assert (body["kind"], body["code"]) == ("Status", status)
    assert "aaaa" not in body["message"]
    assert "bbbb" not in body["message"]


async def test_longest_documented_selector_percent_encoded_gets_the_selector_400(
    wiring: Wiring,
) -> None:
    """A selector one over the limit, every character percent-encoded, reaches the selector
    check (its documented 400), not the HTTP line limit."""
    selector = "".join(f"%{b:02X}" for b in b"m" * (MAX_SELECTOR_LENGTH + 1))
    async with api(wiring, ConnectionLimits(), tls=False) as (endpoint, _site):
        answer = await raw_request(
            endpoint,
            f"GET {DESIRED}?labelSelector={selector} HTTP/1.1\r\nHost: x\r\n".encode() + CLOSE,
        )
    status, body = status_of(answer)
    assert status == 400
    assert "selector" in body["message"]


async def test_a_flood_of_malformed_requests_logs_one_line_and_no_traceback(
    wiring: Wiring, caplog: pytest.LogCaptureFixture
) -> None:
    """50 requests with a NUL in a header: one rate-limited JSON event, nothing through the
    logging module (where aiohttp writes its tracebacks)."""
    caplog.set_level(logging.DEBUG)
    bad = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"
    async with api(wiring, ConnectionLimits(), tls=False) as (endpoint, _site):
        with capture_logs() as events:
            for _ in range(50):
                status, _body = status_of(await raw_request(endpoint, bad))
                assert status == 400
    refused = [e for e in events if e["event"] == "http_request_refused"]
    assert len(refused) == 1
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_malformed_requests_leave_no_traceback_on_the_process_output() -> None:
    """`scaler serve` as a process, 100 malformed requests: stderr has no traceback, stdout
    at most two refusal lines."""
    async with adapter_process() as (process, url):
        host, port = url.removeprefix("https://").rsplit(":", 1)
        endpoint = ApiEndpoint(host=host, port=int(port), tls=True)
        for _ in range(100):
            answer = await raw_request(endpoint, b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n")
            assert status_of(answer)[0] == 400
        process.terminate()
        assert process.stdout is not None
        assert process.stderr is not None
        out, err = await asyncio.wait_for(
            asyncio.gather(process.stdout.read(), process.stderr.read()), 30
        )
    assert b"Traceback" not in err, err[-2000:]
    refusals = [line for line in out.splitlines() if b"http_request_refused" in line]
    assert 1 <= len(refusals) <= 2
