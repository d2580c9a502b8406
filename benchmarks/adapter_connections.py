"""Soak: `scaler serve` under 1,000 idle and 200 active TLS connections; its RSS over time.

Starts ``scaler serve --no-kubernetes --allow-anonymous`` (Prometheus unreachable: the API
still answers discovery) as a process on loopback, then, from this process, for DURATION
seconds:

- IDLE connections that hold without asking: half open TCP and never start TLS, half finish
  the handshake and send nothing; whenever the server closes one (handshake or keep-alive
  timeout, eviction), it is opened again, so IDLE stay pressed against the server;
- ACTIVE clients, each on its own TLS connection, asking ``GET /apis/external.metrics.k8s.io/
  v1beta1`` in a loop (a new connection when the server closed theirs).

Every second it samples the adapter's RSS and open file descriptors (/proc); at the end it
prints the RSS before, peak and after the clients closed, the peak descriptor count, and the
requests answered and failed. The pod limit is 256 MiB.

    python benchmarks/adapter_connections.py [--duration 60] [--idle 1000] [--active 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/apis/external.metrics.k8s.io/v1beta1"


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Tally:
    """What the clients saw."""

    answered: int = 0
    failed: int = 0
    reopened_idle: int = 0
    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


async def _idle(host: str, port: int, tls: bool, stop: asyncio.Event, tally: Tally) -> None:
    context = _client_context() if tls else None
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), 15
            )
        except (OSError, TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.2)
            continue
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            reading = asyncio.ensure_future(reader.read())  # returns when the server closes
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            reading.cancel()
            stopping.cancel()
        writer.close()
        tally.reopened_idle += 1


async def _active(host: str, port: int, stop: asyncio.Event, tally: Tally) -> None:
    request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    context = _client_context()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), 15
            )
        except (OSError, TimeoutError, ssl.SSLError):
            tally.failed += 1
            await asyncio.sleep(0.2)
            continue
        try:
            while not stop.is_set():
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                tally.answered += head.startswith(b"HTTP/1.1 200")
                await asyncio.sleep(0.05)
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, StopIteration):
            tally.failed += 1
        finally:
            writer.close()


async def soak(duration: float, idle: int, active: int) -> None:
    """Run the soak and print its figures."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        "serve",
        "--policies",
        str(ROOT / "policies"),
        "--no-kubernetes",
        "--allow-anonymous",
        "--listen",
        "127.0.0.1:0",
        "--prometheus-url",
        "http://127.0.0.1:9",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    try:
        url = ""
        while not url:
            line = await process.stdout.readline()
            if not line:
                raise SystemExit("scaler serve exited before serving")
            entry = json.loads(line)
            url = entry.get("url", "") if entry.get("event") == "serving" else ""
        # Keep reading its log, so a full pipe never blocks it.
        draining = asyncio.create_task(process.stdout.read())
        host, port_text = url.removeprefix("https://").rsplit(":", 1)
        port = int(port_text)
        await asyncio.sleep(1)
        before = _rss_mib(process.pid)
        stop, tally = asyncio.Event(), Tally()
        tasks = [
            asyncio.create_task(_idle(host, port, i % 2 == 1, stop, tally)) for i in range(idle)
        ]
        tasks += [asyncio.create_task(_active(host, port, stop, tally)) for _ in range(active)]
        started = time.monotonic()
        while time.monotonic() - started < duration:
            await asyncio.sleep(1)
            tally.rss.append(_rss_mib(process.pid))
            tally.fds.append(len(os.listdir(f"/proc/{process.pid}/fd")))
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(3)
        after = _rss_mib(process.pid)
        draining.cancel()
        print(f"scaler serve under {idle} idle + {active} active TLS connections, {duration:g} s")
        print(f"  RSS MiB: before {before:.0f}, peak {max(tally.rss):.0f}, after close {after:.0f}")
        print(f"  open file descriptors: peak {max(tally.fds)}")
        print(
            f"  requests answered 200: {tally.answered} ({tally.answered / duration:.0f}/s);"
            f" failed connections or requests: {tally.failed};"
            f" idle connections closed by the server and reopened: {tally.reopened_idle}"
        )
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def main() -> None:
    """Parse the flags and run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--active", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(soak(args.duration, args.idle, args.active))


if __name__ == "__main__":
    main()
