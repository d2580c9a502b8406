"""A model-server emulator for the activator's tests and benchmark, and a harness to run both.

``ModelServerEmulator`` speaks the OpenAI-compatible API of llama.cpp's ``llama-server`` and
vLLM closely enough for a proxy: ``POST /v1/chat/completions`` and ``/v1/completions`` (JSON,
or server-sent events with ``"stream": true``), ``GET /v1/models``, and ``/health``:

* ``flavor="llamacpp"``: listens at once; ``/health`` and every other path answer 503
  ``{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`` while
  loading, then ``/health`` answers 200 ``{"status":"ok"}``.
* ``flavor="vllm"``: refuses connections while loading (its port is bound but not listening,
  as vLLM's API server only starts once the engine is up), then ``/health`` answers 200 with
  an empty body.

Checked against the real llama-server of llama.cpp b11434
(tests/integration/test_llamacpp_metrics.py compares the two): the loading 503 and the
loaded /health (status, Content-Type ``application/json; charset=utf-8``, body); the shape
of completions and chat completions, JSON and streamed (compact JSON; ``text_completion`` /
``chat.completion`` / ``chat.completion.chunk`` objects; a chat stream opens with a role
delta; the last event carries the finish reason and ``timings``, and for completions
``usage``; then ``data: [DONE]``; ``Content-Type: text/event-stream`` and
``X-Accel-Buffering: no``). What differs: the text is the fixed `TOKENS`, one event each
(the real server may merge tokens into one event while a UTF-8 character is incomplete),
``finish_reason`` is ``stop``, and the numbers are constants. The vLLM flavor's readiness is
written from vLLM's docs: no vLLM runs here.

What the real server cannot do here, and the reason this emulator stays: load for as long as
a test wants without a file lease, record the exact bytes it got and sent, hold a stream open
at a gate, die mid-stream, or answer any status on demand.

It loads after ``load_seconds`` (``None``: when the test calls ``finish_loading()``). It
records every request (method, path with query, headers, raw body) in arrival order and the
exact bytes of every response it sent. With ``stream_gate`` set, a stream sends its first
token and then waits for the gate before the rest, so a test can see the first token arrive
through the proxy while the stream is still open. A request body with ``"emulate_status": N``
gets status N with an OpenAI-shaped error and the header ``X-Emulator: error``; with
``drop_next = N`` the next N completions get no answer at all (their connection is closed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from yarl import URL

from scaler.activator.endpoints import EndpointTracker, HealthPoll, HealthProbe
from scaler.activator.proxy import Activator, ActivatorConfig, serving
from scaler.activator.queue import WakeHook
from scaler.activator.routes import build_routes
from scaler.core.policy import ModelPolicy

TOKENS = ("Hello", ",", " held", " world", "!")


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the model server saw it."""

    index: int  # arrival order, from 0
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    loaded: bool  # whether the model was loaded when it arrived
    peer: tuple[str, int]  # the client's address and port: one per TCP connection


@dataclass
class ModelServerEmulator:
    """See the module docstring."""

    flavor: Literal["llamacpp", "vllm"] = "llamacpp"
    load_seconds: float | None = 0.0
    tokens: tuple[str, ...] = TOKENS
    stream_gate: asyncio.Event | None = None
    break_streams: bool = False  # die after the first chunk (a crashed server mid-answer)
    received: list[ReceivedRequest] = field(default_factory=list)
    responses: dict[int, bytes] = field(default_factory=dict)
    streams_finished: int = 0
    health_checks: int = 0
    drop_next: int = 0  # close the connection of the next N completions without answering

    def __post_init__(self) -> None:
        self.loaded = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._loader: asyncio.Task[None] | None = None
        self._arrivals = 0
        self.url = URL()

    async def start(self) -> URL:
        """Bind a loopback port, start loading; returns the base URL."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        port = self._sock.getsockname()[1]
        self.url = URL.build(scheme="http", host="127.0.0.1", port=port)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completion)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        if self.flavor == "llamacpp":
            await self._listen()
        if self.load_seconds is not None:
            self._loader = asyncio.create_task(self._load_after(self.load_seconds))
        return self.url

    async def finish_loading(self) -> None:
        """The model is loaded: /health turns 200 (vLLM: the port starts listening)."""
        if self.loaded.is_set():
            return
        if self.flavor == "vllm":
            await self._listen()
        self.loaded.set()

    async def stop(self) -> None:
        """Stop serving."""
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        if self.stream_gate is not None:
            self.stream_gate.set()  # let open streams end so the runner can close
        if self._runner is not None:
            await self._runner.cleanup()
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> ModelServerEmulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        assert self._sock is not None
        await web.SockSite(self._runner, self._sock, backlog=1024).start()

    async def _load_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the emulated model load
        await self.finish_loading()

    async def _health(self, _request: web.Request) -> web.Response:
        self.health_checks += 1
        if not self.loaded.is_set():
            return _loading()
        if self.flavor == "vllm":
            return web.Response(status=200)
        return _json({"status": "ok"})

    async def _models(self, _request: web.Request) -> web.Response:
        if not self.loaded.is_set():
            return _loading()
        return _json(
            {
                "models": [{"name": MODEL_NAME, "model": MODEL_NAME}],
                "object": "list",
                "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "llamacpp"}],
            }
        )

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        index = self._arrivals
        self._arrivals += 1
        body = await request.read()
        self.received.append(
            ReceivedRequest(
                index,
                request.method,
                request.path_qs,
                dict(request.headers),
                body,
                self.loaded.is_set(),
                request.transport.get_extra_info("peername") if request.transport else ("", 0),
            )
        )
        if self.drop_next > 0 and request.transport is not None:
            # Gone without an answer, as a server closing a kept-alive connection is.
            self.drop_next -= 1
            request.transport.abort()
            raise asyncio.CancelledError
        if not self.loaded.is_set():
            return _loading()
        payload: dict[str, Any] = json.loads(body)
        if "emulate_status" in payload:
            status = int(payload["emulate_status"])
            error = {"error": {"code": status, "message": f"emulated {status}", "type": "emulated"}}
            data = _dumps(error)
            self.responses[index] = data
            return _json(error, status=status, headers={"X-Emulator": "error"}, data=data)
        chat = request.path == "/v1/chat/completions"
        if payload.get("stream"):
            return await self._stream(request, index, chat)
        text = "".join(self.tokens)
        choice: dict[str, Any] = (
            {"finish_reason": "stop", "index": 0,
             "message": {"role": "assistant", "content": text}}
            if chat
            else {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
        )  # fmt: skip
        answer = {
            "choices": [choice],
            **_envelope(index, chat=chat, chunk=False),
            "usage": _usage(len(self.tokens)),
            "id": f"chatcmpl-{index}",
            "timings": _timings(len(self.tokens)),
        }
        data = _dumps(answer)
        self.responses[index] = data
        return _json(answer, data=data)

    async def _stream(self, request: web.Request, index: int, chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sent = bytearray()

        async def event(data: dict[str, Any] | str) -> None:
            chunk = b"data: " + (data.encode() if isinstance(data, str) else _dumps(data))
            sent.extend(chunk + b"\n\n")
            await response.write(chunk + b"\n\n")

        envelope = _envelope(index, chat=chat, chunk=True)
        if chat:  # llama-server opens a chat stream with the role
            delta = {"role": "assistant", "content": None}
            await event({"choices": [{"finish_reason": None, "index": 0, "delta": delta}],
                         **envelope, "id": f"chatcmpl-{index}"})  # fmt: skip
        for number, token in enumerate(self.tokens):
            if number == 1 and self.stream_gate is not None:
                await self.stream_gate.wait()
            if number == 1 and self.break_streams and request.transport is not None:
                request.transport.abort()
                raise asyncio.CancelledError  # what the server sees when its process dies
            choice: dict[str, Any] = (
                {"finish_reason": None, "index": 0, "delta": {"content": token}}
                if chat
                else {"text": token, "index": 0, "logprobs": None, "finish_reason": None}
            )
            await event({"choices": [choice], **envelope, "id": f"chatcmpl-{index}"})
        if chat:  # the last chat chunk has the finish reason and timings, no usage
            final: dict[str, Any] = {
                "choices": [{"finish_reason": "stop", "index": 0, "delta": {}}],
                **envelope,
                "id": f"chatcmpl-{index}",
                "timings": _timings(len(self.tokens)),
            }
        else:
            final = {
                "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
                **envelope,
                "usage": _usage(len(self.tokens)),
                "id": f"chatcmpl-{index}",
                "timings": _timings(len(self.tokens)),
            }
        await event(final)
        await event("[DONE]")
        await response.write_eof()
        self.responses[index] = bytes(sent)
        self.streams_finished += 1
        return response


MODEL_NAME = "emulated.gguf"


def _dumps(value: object) -> bytes:
    # llama-server writes JSON compactly (nlohmann::json::dump()).
    return json.dumps(value, separators=(",", ":")).encode()


def _json(
    value: object,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=data if data is not None else _dumps(value),
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _envelope(index: int, *, chat: bool, chunk: bool) -> dict[str, Any]:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    return {
        "created": 1_700_000_000 + index,
        "model": MODEL_NAME,
        "system_fingerprint": "b0-emulated",
        "object": kind,
    }


def _usage(tokens: int) -> dict[str, Any]:
    return {
        "completion_tokens": tokens,
        "prompt_tokens": 3,
        "total_tokens": tokens + 3,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _timings(tokens: int) -> dict[str, Any]:
    return {
        "cache_n": 0, "prompt_n": 3, "prompt_ms": 0.5, "prompt_per_token_ms": 0.5 / 3,
        "prompt_per_second": 6000.0, "predicted_n": tokens, "predicted_ms": 0.1 * tokens,
        "predicted_per_token_ms": 0.1, "predicted_per_second": 10000.0,
    }  # fmt: skip


def _loading() -> web.Response:
    return _json(
        {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}},
        status=503,
    )


@contextlib.asynccontextmanager
async def running_activator(
    policies: list[ModelPolicy],
    *,
    upstreams: dict[str, URL],
    tracker: EndpointTracker | None = None,
    config: ActivatorConfig | None = None,
    wake: WakeHook | None = None,
    hold_margin_s: float = 0.0,
) -> AsyncIterator[tuple[Activator, URL]]:
    """An activator for `policies` on a loopback port, its upstreams overridden; yields it and
    its base URL. Readiness: a 50 ms ``/health`` poll (the ``--upstream`` mode), or, when a
    `tracker` is given, whatever the test sets on it."""
    routes = build_routes(policies, upstreams=upstreams, hold_margin_s=hold_margin_s)
    activator = Activator(
        routes=routes,
        tracker=tracker or EndpointTracker(),
        config=config or ActivatorConfig(probe_interval_s=0.05),
        wake=wake,
    )
    async with serving(activator.app()) as url:
        poll = None
        if tracker is None:
            poll = HealthPoll(
                routes=routes,
                tracker=activator.tracker,
                probe=HealthProbe(activator.session),
                interval_s=0.05,
            )
            poll.start()
        try:
            yield activator, url
        finally:
            if poll is not None:
                await poll.stop()


async def until(
    condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition()` every 10 ms until true; fail after `timeout_s` (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def _serve_forever(flavor: Literal["llamacpp", "vllm"], load_seconds: float) -> None:
    server = ModelServerEmulator(flavor=flavor, load_seconds=load_seconds)
    url = await server.start()
    print(url, flush=True)  # the parent reads the URL from the first line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    """Run the emulator as its own process (the benchmark): prints its URL, serves until
    SIGTERM. ``python -m tests.activator.model_server [--flavor vllm] [--load-seconds N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flavor", choices=("llamacpp", "vllm"), default="llamacpp")
    parser.add_argument("--load-seconds", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(_serve_forever(args.flavor, args.load_seconds))


if __name__ == "__main__":
    main()
