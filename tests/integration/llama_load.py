"""A load generator for tests against a real ``llama-server``: completions of a forced length.

The tiny test model's output is noise, so every request pins its length: ``n_predict`` (the
number of tokens to generate) with ``ignore_eos`` (do not stop at an end-of-sequence token),
both llama.cpp ``/completion`` options that its OpenAI-compatible ``/v1/completions`` accepts
too (llama.cpp ``tools/server/README.md``). The answer's ``usage.completion_tokens`` is what
the server generated, so a test checks the load it sent against what was served.

`CompletionLoad` runs requests as tasks on the test's event loop: `hold(n)` keeps n long
requests open (they do not finish within a test; they are cancelled when the load stops),
`paced(per_second)` sends short ones on a fixed schedule (absolute times, so a late request
does not lower the average rate).

The held requests stream (and the load reads and drops their events): llama-server stops a
streamed generation as soon as its client goes away, but it finishes a non-streamed one whose
client has left, keeping the slot busy (measured on b11434), which would outlive the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from yarl import URL

LONG_TOKENS = 30_000
"""A generation that outlasts any test (the tiny model needs minutes for it on one thread)."""


def completion_body(tokens: int, *, stream: bool = False, prompt: str = "hello") -> bytes:
    """A ``/v1/completions`` body generating exactly `tokens` tokens."""
    payload = {"prompt": prompt, "n_predict": tokens, "ignore_eos": True, "stream": stream}
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class Answer:
    """One finished request: its status and JSON body."""

    status: int
    body: Any

    @property
    def completion_tokens(self) -> int:
        """Tokens the server generated for it (0 for an error answer)."""
        usage = self.body.get("usage") if isinstance(self.body, dict) else None
        return int(usage["completion_tokens"]) if usage else 0


@dataclass
class CompletionLoad:
    """Requests to ``{base}{path}`` from one session; see the module docstring."""

    session: aiohttp.ClientSession
    url: URL
    answers: list[Answer] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def complete(self, tokens: int) -> Answer:
        """One request generating `tokens` tokens; its answer."""
        async with self.session.post(
            self.url, data=completion_body(tokens), headers={"Content-Type": "application/json"}
        ) as response:
            text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return Answer(response.status, body)

    async def stream(self, tokens: int) -> int:
        """One streamed request generating `tokens` tokens, read to its end; its status."""
        body = completion_body(tokens, stream=True)
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            async for _chunk in response.content.iter_any():
                pass
            return response.status

    def hold(self, count: int) -> list[asyncio.Task[int]]:
        """Start `count` long streamed requests (``LONG_TOKENS`` each); their tasks."""
        held = [asyncio.create_task(self.stream(LONG_TOKENS)) for _ in range(count)]
        self._tasks.extend(held)
        return held

    def paced(self, per_second: float, tokens: int) -> None:
        """Send one `tokens`-token request every ``1 / per_second`` s until the load stops;
        finished answers go to `answers`."""

        async def send() -> None:
            self.answers.append(await self.complete(tokens))

        async def schedule() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            sent = 0
            while True:
                self._tasks.append(asyncio.create_task(send()))
                sent += 1
                await asyncio.sleep(max(0.0, start + sent / per_second - loop.time()))

        self._tasks.append(asyncio.create_task(schedule()))

    async def stop(self) -> None:
        """Cancel every request still running (their connections close)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
