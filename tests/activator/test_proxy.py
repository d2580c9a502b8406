"""The activator end to end on loopback: hold while cold, release in order, stream, refuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from yarl import URL

from scaler.activator.endpoints import EndpointTracker
from scaler.activator.proxy import ActivatorConfig
from scaler.core.policy import ModelPolicy
from scaler.metric_names import (
    ACTIVATOR_FORWARDED,
    ACTIVATOR_PENDING,
    ACTIVATOR_REJECTED,
    ACTIVATOR_TIMEOUTS,
    ACTIVATOR_WAIT,
)
from tests.activator.model_server import ModelServerEmulator, running_activator, until
from tests.builders import make_policy

CHAT = "/tinyllama/v1/chat/completions"


def tiny(cold_start_s: float = 5.0, **changes: object) -> ModelPolicy:
    """tinyllama with a short cold start: hold timeout = cold_start_s (factor 1, no margin)."""
    return make_policy(
        "tinyllama", coldStart={"seconds": cold_start_s, "overdueFactor": 1.0}, **changes
    )


def body_for(tag: int, *, stream: bool = False) -> bytes:
    """A chat request body in an unusual but valid layout: byte-exactness shows."""
    text = (
        '{ "model" : "tinyllama",\n  "messages": [{"role": "user", "content": '
        f'"request {tag} — ünïcode \\u00e9"}}], "stream": {"true" if stream else "false"} }}'
    )
    return text.encode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def until_content(response: aiohttp.ClientResponse) -> bytes:
    """The stream's events up to the first one with a content delta (a chat stream opens
    with a role delta)."""
    read = b""
    while b'"content":"' not in read:
        read += await response.content.readuntil(b"\n\n")
    return read


async def post(session: aiohttp.ClientSession, url: URL, body: bytes) -> tuple[int, bytes]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.read()


async def test_held_requests_are_answered_in_arrival_order_with_bodies_intact() -> None:
    """Requests held while the model loads all reach it once healthy, in the order they came,
    with request and response bytes (JSON and streamed events) unchanged."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        gate = activator.gates["tinyllama"]
        bodies = [body_for(i, stream=i % 3 == 2) for i in range(20)]
        tasks = []
        for body in bodies:
            tasks.append(asyncio.create_task(post(session, url.with_path(CHAT), body)))
            await until(lambda: gate.pending == len(tasks), what=f"{len(tasks)} held")
        assert server.received == []
        await server.finish_loading()
        results = await asyncio.gather(*tasks)

        assert [r.body for r in server.received] == bodies
        assert all(r.loaded for r in server.received)
        for (status, answer), received in zip(results, server.received, strict=True):
            assert status == 200
            assert answer == server.responses[received.index]
        streamed = results[2][1]
        assert streamed.startswith(b"data: ")
        assert streamed.endswith(b"data: [DONE]\n\n")
        assert gate.pending == 0


async def test_a_request_sent_during_a_one_second_load_is_answered_after_it() -> None:
    """An emulator that needs 1 s to load: the request is held, never forwarded early, and
    answered once /health turns 200."""
    async with (
        ModelServerEmulator(load_seconds=1.0) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
    ):
        status, answer = await post(session, url.with_path(CHAT), body_for(0))
        assert status == 200
        assert answer == server.responses[0]
        assert [(r.body, r.loaded) for r in server.received] == [(body_for(0), True)]


async def test_vllm_flavor_is_held_while_its_port_refuses() -> None:
    """vLLM does not listen until loaded: refused connections count as not ready, not 502."""
    async with (
        ModelServerEmulator(flavor="vllm", load_seconds=None) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        task = asyncio.create_task(post(session, url.with_path(CHAT), body_for(1)))
        await until(lambda: activator.gates["tinyllama"].pending == 1, what="held")
        await server.finish_loading()
        status, _ = await task
        assert status == 200


async def test_health_is_probed_before_the_first_forward_after_a_cold_start() -> None:
    """A ready endpoint whose server still answers /health 503 does not get the request."""
    tracker = EndpointTracker()
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}, tracker=tracker) as (
            activator,
            url,
        ),
        aiohttp.ClientSession() as session,
    ):
        task = asyncio.create_task(post(session, url.with_path(CHAT), body_for(2)))
        await until(lambda: activator.gates["tinyllama"].pending == 1, what="held")
        tracker.set_ready("tinyllama", 1)  # e.g. an EndpointSlice without a readiness probe
        await until(lambda: server.health_checks >= 2, what="two failed probes")
        assert server.received == []
        assert activator.gates["tinyllama"].pending == 1
        await server.finish_loading()
        status, _ = await task
        assert status == 200


async def test_streaming_is_not_buffered() -> None:
    """The first SSE chunk reaches the client while the server still holds the stream open."""
    gate = asyncio.Event()
    async with (
        ModelServerEmulator(stream_gate=gate) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
        session.post(url.with_path(CHAT), data=body_for(3, stream=True)) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(until_content(response), 10)
        assert b'"delta":{"content":"Hello"}' in first
        assert server.streams_finished == 0
        gate.set()
        rest = await response.read()
        assert first + rest == server.responses[0]
        assert server.streams_finished == 1


async def test_hold_timeout_gives_503_retry_after_and_an_openai_error() -> None:
    """No ready endpoint within the hold timeout: 503, Retry-After, OpenAI-shaped error."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        running_activator([tiny(cold_start_s=0.3)], upstreams={"tinyllama": server.url}) as (
            activator,
            url,
        ),
        aiohttp.ClientSession() as session,
        session.post(url.with_path(CHAT), data=body_for(4)) as response,
    ):
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"  # ceil(coldStart.seconds)
        error = (await response.json())["error"]
        assert set(error) == {"message", "type", "code"}
        assert error["code"] == "model_timeout"
        assert activator.gates["tinyllama"].pending == 0
        text = activator.metrics.exposition().decode()
        assert metric(text, ACTIVATOR_TIMEOUTS, model="tinyllama") == 1
        assert metric(text, ACTIVATOR_REJECTED, model="tinyllama", reason="timeout") == 1
        assert server.received == []


async def test_a_full_queue_gives_503_at_once_and_keeps_the_held_ones() -> None:
    """Beyond --queue-size a request is refused with 503; those already held still get in."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        running_activator(
            [tiny()],
            upstreams={"tinyllama": server.url},
            config=ActivatorConfig(queue_size=2, probe_interval_s=0.05),
        ) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        held = [
            asyncio.create_task(post(session, url.with_path(CHAT), body_for(i))) for i in (0, 1)
        ]
        await until(lambda: activator.gates["tinyllama"].pending == 2, what="2 held")
        async with session.post(url.with_path(CHAT), data=body_for(2)) as refused:
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "5"
            assert (await refused.json())["error"]["code"] == "model_queue_full"
        await server.finish_loading()
        assert [s for s, _ in await asyncio.gather(*held)] == [200, 200]


async def test_a_client_that_disconnects_leaves_the_queue() -> None:
    """A held client that goes away frees its place: the pending gauge drops back to 0."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        # A hold timeout far beyond the wait below: only the disconnect can empty the queue.
        running_activator([tiny(cold_start_s=60)], upstreams={"tinyllama": server.url}) as (
            activator,
            url,
        ),
    ):
        impatient = aiohttp.ClientSession()
        task = asyncio.create_task(post(impatient, url.with_path(CHAT), body_for(5)))
        gate = activator.gates["tinyllama"]
        await until(lambda: gate.pending == 1, what="held")
        task.cancel()
        await impatient.close()
        await until(lambda: gate.pending == 0, timeout_s=5, what="the queue to empty")
        text = activator.metrics.exposition().decode()
        assert metric(text, ACTIVATOR_PENDING, model="tinyllama") == 0
        await server.finish_loading()
        assert server.received == []


async def test_routes_by_host_and_by_prefix() -> None:
    """Host routes forward the path as is; a path prefix is stripped; the query survives."""
    async with (
        ModelServerEmulator() as tiny_server,
        ModelServerEmulator() as mistral_server,
        running_activator(
            [make_policy("tinyllama", service={"host": "tiny.lan"}), make_policy("mistral-7b")],
            upstreams={"tinyllama": tiny_server.url, "mistral-7b": mistral_server.url},
        ) as (_activator, url),
        aiohttp.ClientSession() as session,
    ):
        body = b'{"prompt": "hi"}'
        async with session.post(
            url.with_path("/v1/completions").with_query(a="1"),
            data=body,
            headers={"Host": "Tiny.LAN:443"},
        ) as by_host:
            assert by_host.status == 200
        async with session.post(
            URL(str(url) + "/mistral-7b/v1/completions?b=2&b=3"), data=body
        ) as by_prefix:
            assert by_prefix.status == 200
        async with session.post(url.with_path("/mistral-7bx/v1/completions"), data=body) as none:
            assert none.status == 404
            assert (await none.json())["error"]["code"] == "model_not_routed"
        assert [r.path_qs for r in tiny_server.received] == ["/v1/completions?a=1"]
        assert [r.path_qs for r in mistral_server.received] == ["/v1/completions?b=2&b=3"]
        assert mistral_server.received[0].headers["X-Forwarded-Prefix"] == "/mistral-7b"


async def test_bodies_above_the_limit_get_413() -> None:
    """--max-body-bytes: a body at the limit passes; one byte more (sized or chunked) is 413."""

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 16):
            yield data[i : i + 16]

    limit = 64
    at_limit = b'{"prompt": "' + b"x" * (limit - 14) + b'"}'
    assert len(at_limit) == limit
    over = at_limit[:-2] + b'x"}'
    async with (
        ModelServerEmulator() as server,
        running_activator(
            [tiny()],
            upstreams={"tinyllama": server.url},
            config=ActivatorConfig(max_body_bytes=limit),
        ) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        target = url.with_path("/tinyllama/v1/completions")
        assert (await post(session, target, at_limit))[0] == 200
        status, answer = await post(session, target, over)
        assert status == 413
        assert json.loads(answer)["error"]["code"] == "request_too_large"
        async with session.post(target, data=chunks(over)) as chunked:
            assert chunked.status == 413
        assert [r.body for r in server.received] == [at_limit]
        text = activator.metrics.exposition().decode()
        assert metric(text, ACTIVATOR_REJECTED, model="tinyllama", reason="body_too_large") == 2


async def test_upstream_errors_pass_through_unchanged() -> None:
    """A model server's error (status, headers, body) reaches the client as it was sent."""
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
        session.post(url.with_path(CHAT), data=b'{"emulate_status": 429}') as response,
    ):
        assert response.status == 429
        assert response.headers["X-Emulator"] == "error"
        assert await response.read() == server.responses[0]


async def test_hop_by_hop_headers_are_not_forwarded() -> None:
    """Connection-scoped headers (and those the Connection header names) stay at the proxy;
    end-to-end headers such as Authorization reach the model server."""
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
    ):
        headers = {
            "Authorization": "Bearer sk-test",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
        }
        async with session.post(url.with_path(CHAT), data=body_for(6), headers=headers) as r:
            assert r.status == 200
        seen = server.received[0].headers
        assert seen["Authorization"] == "Bearer sk-test"
        assert "X-Hop" not in seen
        assert "Keep-Alive" not in seen
        assert "Proxy-Authorization" not in seen
        assert seen["X-Forwarded-For"] == "127.0.0.1"


async def test_metrics_healthz_and_readyz() -> None:
    """/metrics serves text 0.0.4 with the ACTIVATOR_* names; /healthz and /readyz answer ok."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        task = asyncio.create_task(post(session, url.with_path(CHAT), body_for(7)))
        await until(lambda: activator.gates["tinyllama"].pending == 1, what="held")
        async with session.get(url.with_path("/metrics")) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        assert metric(text, ACTIVATOR_PENDING, model="tinyllama") == 1
        await server.finish_loading()
        assert (await task)[0] == 200
        text = activator.metrics.exposition().decode()
        assert metric(text, ACTIVATOR_PENDING, model="tinyllama") == 0
        assert metric(text, ACTIVATOR_FORWARDED, model="tinyllama") == 1
        assert metric(text, ACTIVATOR_WAIT + "_count", model="tinyllama") == 1
        for path in ("/healthz", "/readyz"):
            async with session.get(url.with_path(path)) as response:
                assert response.status == 200


async def test_an_unreachable_upstream_gives_502() -> None:
    """A ready model whose server refuses the connection: 502 with an OpenAI-shaped error."""
    tracker = EndpointTracker()
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}, tracker=tracker) as (
            activator,
            url,
        ),
        aiohttp.ClientSession() as session,
    ):
        tracker.set_ready("tinyllama", 1)
        assert (await post(session, url.with_path(CHAT), body_for(8)))[0] == 200  # now warm
        await server.stop()
        status, answer = await post(session, url.with_path(CHAT), body_for(9))
        assert status == 502
        assert json.loads(answer)["error"]["code"] == "model_unreachable"
        assert activator.gates["tinyllama"].warm


async def test_an_invalid_upstream_response_gives_502() -> None:
    """A server answering with something that is not HTTP: an OpenAI-shaped 502, counted as
    rejected, not the framework's bare 500."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await reader.readline()
        healthy = request_line.startswith(b"GET /health ")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if healthy else b"garbage\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    upstream = URL.build(scheme="http", host="127.0.0.1", port=server.sockets[0].getsockname()[1])
    async with (
        server,
        running_activator([tiny()], upstreams={"tinyllama": upstream}) as (activator, url),
        aiohttp.ClientSession() as session,
    ):
        status, answer_body = await post(session, url.with_path(CHAT), body_for(12))
        assert status == 502
        assert json.loads(answer_body)["error"]["code"] == "model_unreachable"
        text = activator.metrics.exposition().decode()
        assert (
            metric(text, ACTIVATOR_REJECTED, model="tinyllama", reason="upstream_unreachable") == 1
        )


async def test_a_stream_broken_by_the_server_reaches_the_client_broken() -> None:
    """A server that dies mid-stream: the client gets the chunks sent so far and then an
    error, never a cleanly ended (and so seemingly complete) stream."""
    async with (
        ModelServerEmulator(break_streams=True) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
        session.post(url.with_path(CHAT), data=body_for(10, stream=True)) as response,
    ):
        first = await until_content(response)
        assert b'"delta":{"content":"Hello"}' in first
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_held_requests_get_503_when_the_activator_stops() -> None:
    """At shutdown held requests are answered with an OpenAI-shaped 503, not dropped."""
    async with (
        ModelServerEmulator(load_seconds=None) as server,
        aiohttp.ClientSession() as session,
    ):
        async with running_activator([tiny()], upstreams={"tinyllama": server.url}) as (
            activator,
            url,
        ):
            task = asyncio.create_task(post(session, url.with_path(CHAT), body_for(11)))
            await until(lambda: activator.gates["tinyllama"].pending == 1, what="held")
        status, answer = await task
        assert status == 503
        assert json.loads(answer)["error"]["code"] == "model_shutting_down"
        text = activator.metrics.exposition().decode()
        assert metric(text, ACTIVATOR_REJECTED, model="tinyllama", reason="shutting_down") == 1


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"POST /tinyllama/v1/completions HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", id="nul"
        ),
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", id="star"),
    ],
)
async def test_malformed_http_gets_an_openai_error_and_one_log_line(raw: bytes) -> None:
    """What aiohttp would answer in plain text (a NUL in a header, ``OPTIONS *``) is an
    OpenAI-shaped error; ten of them give at most one log line and no traceback."""
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
    ):
        with capture_logs() as events:
            for _ in range(10):
                reader, writer = await asyncio.open_connection(url.host, url.port)
                writer.write(raw)
                answer = await asyncio.wait_for(reader.read(), timeout=5)
                writer.close()
                head, _, body = answer.partition(b"\r\n\r\n")
                assert b"application/json" in head.lower(), head
                error = json.loads(body)["error"]
                assert error["type"] == "invalid_request_error"
    refused = [e for e in events if e["event"] == "http_request_refused"]
    assert len(refused) <= 1
    assert not [e for e in events if "exc_info" in e or "exception" in e]


@pytest.mark.parametrize(
    "path", ["/tinyllama/../../admin", "/tinyllama/v1/%2e%2e/%2E%2E/admin", "/tinyllama/./v1"]
)
async def test_dot_segments_are_refused_not_forwarded(path: str) -> None:
    """A path with '.' or '..' segments (encoded or not) is a 400; nothing reaches the model."""
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}) as (_activator, url),
        aiohttp.ClientSession() as session,
        session.get(URL(str(url) + path, encoded=True)) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"
        assert server.received == []


async def test_a_client_x_forwarded_prefix_is_not_passed_on() -> None:
    """The client's X-Forwarded-Prefix is dropped: the model sees the stripped prefix only,
    and none at all when routed by Host."""
    async with (
        ModelServerEmulator() as server,
        running_activator(
            [make_policy("tinyllama", service={"host": "tiny.lan"})],
            upstreams={"tinyllama": server.url},
        ) as (_activator, url),
        aiohttp.ClientSession() as session,
    ):
        forged = {"X-Forwarded-Prefix": "/admin"}
        body = b'{"prompt": "hi"}'
        async with session.post(
            url.with_path("/tinyllama/v1/completions"), data=body, headers=forged
        ) as by_prefix:
            assert by_prefix.status == 200
        async with session.post(
            url.with_path("/v1/completions"), data=body, headers={**forged, "Host": "tiny.lan"}
        ) as by_host:
            assert by_host.status == 200
    prefixes = [
        {k.lower(): v for k, v in r.headers.items()}.get("x-forwarded-prefix")
        for r in server.received
    ]
    assert prefixes == ["/tinyllama", None]


async def test_an_upstream_connection_is_not_reused_after_an_event_stream() -> None:
    """Plain answers keep their upstream connection for the next request; an event stream's
    is closed (llama-server closes it after the stream without saying so)."""
    tracker = EndpointTracker()
    tracker.set_ready("tinyllama", 1)  # no /health poll sharing the pool
    gate = asyncio.Event()
    async with (
        ModelServerEmulator(stream_gate=gate) as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}, tracker=tracker) as (
            _activator,
            url,
        ),
        aiohttp.ClientSession() as session,
    ):
        for tag in (0, 1):
            assert (await post(session, url.with_path(CHAT), body_for(tag)))[0] == 200
        async with session.post(url.with_path(CHAT), data=body_for(2, stream=True)) as response:
            await until_content(response)  # the stream is open: its headers came first
            gate.set()
            await response.read()
        assert (await post(session, url.with_path(CHAT), body_for(3)))[0] == 200
    peers = [r.peer for r in server.received]
    assert peers[0] == peers[1] == peers[2] != peers[3]


async def test_a_request_on_a_connection_the_server_closed_is_sent_again_once() -> None:
    """The server drops a kept-alive connection as a request goes out on it: the request is
    sent once more, on a new connection, and answered. Dropped on a new connection (the pool
    is empty now), it is a 502 at once: that server is failing, not closing an idle one."""
    tracker = EndpointTracker()
    tracker.set_ready("tinyllama", 1)
    async with (
        ModelServerEmulator() as server,
        running_activator([tiny()], upstreams={"tinyllama": server.url}, tracker=tracker) as (
            _activator,
            url,
        ),
        aiohttp.ClientSession() as session,
    ):
        assert (await post(session, url.with_path(CHAT), body_for(1)))[0] == 200
        server.drop_next = 1
        status, answer = await post(session, url.with_path(CHAT), body_for(2))
        assert status == 200
        dropped, retried = server.received[1:]
        assert dropped.body == retried.body == body_for(2)
        assert dropped.peer == server.received[0].peer != retried.peer
        assert answer == server.responses[retried.index]

        server.drop_next = 1
        status, answer = await post(session, url.with_path(CHAT), body_for(3))
        assert status == 502
        assert json.loads(answer)["error"]["code"] == "model_unreachable"
        assert [r.body for r in server.received[3:]] == [body_for(3)]
