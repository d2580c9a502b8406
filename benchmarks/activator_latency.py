"""The latency the activator adds to a warm model, and the requests/s it passes.

Starts the model-server emulator (tests/activator/model_server.py) and ``scaler activator
--no-kubernetes --upstream tinyllama=<emulator>`` as two processes on loopback, then, from
this process:

1. latency: the same small chat completion sent alternately straight to the emulator
   (the baseline) and through the activator, one at a time on kept-alive connections; prints
   p50/p99 of each and the difference;
2. streaming: time to the first SSE chunk of a streamed completion, direct and proxied;
3. throughput: requests/s with CONCURRENCY requests in flight, direct and proxied.

Everything shares one 2-core machine, so the figures are relative: compare proxied with
direct from the same run, not with another machine.

    python benchmarks/activator_latency.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps(
    {"model": "tinyllama", "messages": [{"role": "user", "content": "Say hello."}]}
).encode()
STREAM_BODY = json.dumps(
    {"model": "tinyllama", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
).encode()
HEADERS = {"Content-Type": "application/json"}


async def start(
    *args: str, url_from: Callable[[bytes], str | None]
) -> tuple[asyncio.subprocess.Process, URL]:
    """Start a process and read its base URL from its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stream = process.stdout if args[1] == "tests.activator.model_server" else process.stderr
    assert stream is not None
    async with asyncio.timeout(60):
        while True:
            line = await stream.readline()
            if not line:
                raise RuntimeError(f"{' '.join(args)} exited before it served")
            url = url_from(line)
            if url:
                return process, URL(url)


def _emulator_url(line: bytes) -> str | None:
    return line.decode().strip() or None


def _activator_url(line: bytes) -> str | None:
    entry = json.loads(line)
    return str(entry["url"]) if entry.get("event") == "activator_started" else None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def one(session: aiohttp.ClientSession, url: URL) -> float:
    """Seconds for one complete non-streaming completion."""
    began = time.perf_counter()
    async with session.post(url, data=BODY, headers=HEADERS) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status}")
    return time.perf_counter() - began


async def first_chunk(session: aiohttp.ClientSession, url: URL) -> float:
    """Seconds to the first SSE event of a streamed completion."""
    began = time.perf_counter()
    async with session.post(url, data=STREAM_BODY, headers=HEADERS) as response:
        await response.content.readuntil(b"\n\n")
        elapsed = time.perf_counter() - began
        await response.read()
    return elapsed


async def throughput(
    session: aiohttp.ClientSession, url: URL, *, total: int, concurrency: int
) -> float:
    """Requests/s for `total` requests with `concurrency` in flight."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one(session, url)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - began)


async def alternate(
    measure: Callable[[aiohttp.ClientSession, URL], Awaitable[float]],
    session: aiohttp.ClientSession,
    direct: URL,
    proxied: URL,
    count: int,
) -> tuple[list[float], list[float]]:
    """`count` measurements of each path, interleaved so both see the same noise."""
    d: list[float] = []
    p: list[float] = []
    for _ in range(count):
        d.append(await measure(session, direct))
        p.append(await measure(session, proxied))
    return d, p


def report(name: str, direct: list[float], proxied: list[float]) -> None:
    """Print p50/p99 of both paths and the difference, in milliseconds."""
    ms = 1000
    d50, d99 = percentile(direct, 50) * ms, percentile(direct, 99) * ms
    p50, p99 = percentile(proxied, 50) * ms, percentile(proxied, 99) * ms
    print(
        f"{name:<22} direct p50 {d50:7.3f} ms  p99 {d99:7.3f} ms | "
        f"proxied p50 {p50:7.3f} ms  p99 {p99:7.3f} ms | "
        f"added p50 {p50 - d50:+7.3f} ms  p99 {p99 - d99:+7.3f} ms  (n={len(direct)})"
    )


async def main(requests: int, concurrency: int) -> None:
    emulator, upstream = await start("-m", "tests.activator.model_server", url_from=_emulator_url)
    activator, proxy = await start(
        "-m",
        "scaler.cli",
        "activator",
        "--policies",
        str(ROOT / "policies" / "tinyllama.yaml"),
        "--listen",
        "127.0.0.1:0",
        "--no-kubernetes",
        "--upstream",
        f"tinyllama={upstream}",
        "--health-interval",
        "0.1",
        url_from=_activator_url,
    )
    try:
        direct = upstream.with_path("/v1/chat/completions")
        proxied = proxy.with_path("/tinyllama/v1/chat/completions")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await alternate(one, session, direct, proxied, 200)  # warm-up (and wait for warm)
            print(f"python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, loopback")
            report("completion latency", *await alternate(one, session, direct, proxied, requests))
            report(
                "stream first chunk",
                *await alternate(first_chunk, session, direct, proxied, max(50, requests // 4)),
            )
            total = requests * 2
            base = await throughput(session, direct, total=total, concurrency=concurrency)
            through = await throughput(session, proxied, total=total, concurrency=concurrency)
            print(
                f"throughput c={concurrency:<3}        direct {base:8.0f} req/s | "
                f"proxied {through:8.0f} req/s ({through / base:.0%} of direct, n={total})"
            )
    finally:
        for process in (activator, emulator):
            process.terminate()
            await process.wait()


def cli() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="latency samples per path")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight for req/s")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))


if __name__ == "__main__":
    cli()
