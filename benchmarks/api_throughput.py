"""External metrics API throughput and latency on loopback, next to a bare aiohttp handler.

Each server runs in its own process (this script with ``--serve``), so the client does not
share an interpreter with it. Measured in the same run, with the same clients:

* ``bare``: an aiohttp app with one route returning a fixed body (our 4-model response),
  no middleware: the ceiling any aiohttp server on this machine reaches;
* ``api-4`` / ``api-1000``: scaler's app (authentication guard, self-metrics, selector, store,
  Quantity formatting) with 4 and 1,000 models published, asking for one model by selector
  as the HPA does. The same URL asked again and again is served from the answer cache;
* ``api-4-miss`` / ``api-1000-miss``: the same, with every request missing that cache. This is
  what an HPA sees in production: it asks once per sync (15 s) and each control tick (5 s)
  publishes, so its previous answer is always outdated.

Two measurements per server and transport (plain HTTP and TLS):

* throughput: ``wrk`` (1 thread, 16 connections) when installed, else an aiohttp client
  with 16 concurrent connections; requests/s and p50/p99 latency, the median of several
  rounds that alternate between the servers (the machine is shared, load drifts), and the
  server process's CPU time per request (``cpu us``, from /proc: independent of the load
  other processes put on the machine);
* paced at 500 requests/s, p50/p99: wrk with a think time per connection (the latency of
  the server, without Python client jitter), and an open-loop aiohttp client (honest about
  queueing, but its own scheduling jitter on a loaded machine shows in the p99).

TLS runs have no client certificate (wrk cannot present one) and anonymous allowed; the
handshake happens once per connection either way.

    python benchmarks/api_throughput.py [--seconds 3] [--rounds 3] [--rate 500] [--transport both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from scaler.api.auth import Authenticator
from scaler.api.metric_names import EXTERNAL_DESIRED_REPLICAS
from scaler.api.selfmetrics import Health, SelfMetrics
from scaler.api.server import build_app, serve_api
from scaler.api.store import DecisionStore
from scaler.api.tls import serving_ssl_context
from scaler.core import Decision, Reason, Signal

NAMESPACE = "cortex"
PATH = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{EXTERNAL_DESIRED_REPLICAS}"
CONNECTIONS = 16


def model_names(count: int) -> list[str]:
    """The four homelab models, or `count` synthetic ones."""
    if count == 4:
        return ["tinyllama", "mistral-7b", "deepseek-coder", "mixtral-8x7b"]
    return [f"model-{i:04d}" for i in range(count)]


class MissingStore(DecisionStore):
    """A store whose version moves on every read, so no cached answer is ever reused."""

    _reads = itertools.count()

    @property
    def version(self) -> int:
        """A new version on each read: the answer cache never hits."""
        return next(self._reads)


def scaler_app(count: int, *, cached: bool = True) -> web.Application:
    """scaler's API app with `count` models, each with a fresh decision."""
    models = model_names(count)
    store = (DecisionStore if cached else MissingStore)(models, staleness_seconds=3600)
    now = time.time()
    for i, model in enumerate(models):
        signals = {Signal.QUEUE_DEPTH: i * 0.5, Signal.TOKENS_PER_SECOND: 100.0 + i}
        store.publish(Decision(model, now, 2, 2, 2, 0, signals, {}, 2, None, (Reason.DEMAND,)))
    return build_app(
        store=store,
        metrics=SelfMetrics(),
        health=Health(),
        authenticator=Authenticator(allow_anonymous=True),
        namespaces=dict.fromkeys(models, NAMESPACE),
    )


def bare_app(body: bytes) -> web.Application:
    """One route returning `body`, no middleware: the baseline."""

    async def fixed(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(PATH, fixed)
    return app


async def serve(kind: str, tls: bool) -> None:
    """Child process: serve `kind` on a free port, print the port, run until stdin closes."""
    if kind == "bare":
        body = json.dumps(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": "external.metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": [
                    {
                        "metricName": EXTERNAL_DESIRED_REPLICAS,
                        "metricLabels": {"model": "mistral-7b"},
                        "timestamp": "2026-01-01T00:00:00Z",
                        "value": "2",
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        app = bare_app(body)
    else:
        count, _, miss = kind.removeprefix("api-").partition("-")
        app = scaler_app(int(count), cached=miss != "miss")
    context = None
    if tls:
        context, _ = serving_ssl_context()
    async with serve_api(app, host="127.0.0.1", port=0, ssl_context=context) as endpoint:
        print(endpoint.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@dataclass(frozen=True)
class Figures:
    """One measurement: requests/s and latency percentiles in milliseconds."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def client_ssl() -> ssl.SSLContext:
    """Clients skip verification: the servers use throwaway self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def closed_loop(url: str, seconds: float) -> Figures:
    """aiohttp client, CONNECTIONS concurrent requests back to back."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - began
    return Figures(
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
        errors,
    )


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float) -> Figures:
    """wrk, 1 thread and CONNECTIONS connections; parses requests/s and the 50/99 % lines."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:.0f}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Figures:
    """Requests/s, the 50 % and 99 % latency lines and non-2xx count of wrk's report."""

    def latency(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert found is not None, out
        return float(found.group(1)) * _WRK_UNITS[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps is not None, out
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Figures(
        float(rps.group(1)), latency("50"), latency("99"), int(bad.group(1)) if bad else 0
    )


PACED_CONNECTIONS = 10


def paced_wrk(url: str, rate: float, seconds: float, folder: Path) -> Figures:
    """wrk with a think time per connection so that PACED_CONNECTIONS make `rate` req/s.

    Closed loop (a slow answer delays that connection's next request), but at this load the
    server is idle most of the time, and wrk's latency histogram carries no Python jitter.
    """
    script = folder / "pace.lua"
    delay_ms = PACED_CONNECTIONS * 1000 / rate
    script.write_text(f"function delay()\n  return {delay_ms:.3f}\nend\n")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{PACED_CONNECTIONS}",
            f"-d{seconds:.0f}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


async def paced(url: str, rate: float, seconds: float) -> Figures:
    """Open loop: one request every 1/rate s whatever the answers; latency from send time."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=64, ssl=client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # open connections (and TLS sessions) before timing
            async with session.get(url) as response:
                await response.read()

        async def one(scheduled: float) -> None:
            nonlocal errors
            async with session.get(url) as response:
                await response.read()
                errors += response.status != 200
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return Figures(
        total / elapsed, percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, errors
    )


class Server:
    """A child process serving one app; the context manager yields its base URL."""

    def __init__(self, kind: str, tls: bool) -> None:
        self.kind, self.tls = kind, tls

    def __enter__(self) -> str:
        args = [sys.executable, __file__, "--serve", self.kind] + (["--tls"] if self.tls else [])
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *_exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


KINDS = (
    ("bare", ""),
    ("api-4", "mistral-7b"),
    ("api-1000", "model-0500"),
    ("api-4-miss", "mistral-7b"),
    ("api-1000-miss", "model-0500"),
)


def measure(url: str, seconds: float, use_wrk: bool) -> Figures:
    """One throughput run against `url`."""
    return wrk(url, seconds) if use_wrk else asyncio.run(closed_loop(url, seconds))


def median_figures(runs: Sequence[Figures]) -> Figures:
    """Per-field median over rounds (the machine is shared: single runs are noisy)."""
    return Figures(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--rate", type=float, default=500.0, help="paced request rate")
    parser.add_argument("--transport", choices=("http", "https", "both"), default="both")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.tls))
        return

    use_wrk = shutil.which("wrk") is not None
    client = "wrk -t1" if use_wrk else "aiohttp"
    print(
        f"cpus: {os.cpu_count()}  load: {os.getloadavg()[0]:.2f}  python {sys.version.split()[0]}"
    )
    print(
        f"throughput: {client} -c{CONNECTIONS}, {args.seconds:.0f} s x {args.rounds} interleaved"
        f" rounds (median); paced at {args.rate:.0f} req/s: wrk -c{PACED_CONNECTIONS} with think"
        f" time, and an aiohttp open-loop client, {args.seconds:.0f} s each, median of rounds"
    )
    print(f"{'':23} {'throughput (max)':^41} | {'paced, wrk':^23} | {'paced, open loop':^23}")
    header = (
        f"{'transport':9} {'server':13} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'vs bare':>8}"
        f" {'cpu us':>7}"
        f" | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    transports = {"http": (False,), "https": (True,), "both": (False, True)}[args.transport]
    for tls in transports:
        transport = "https" if tls else "http"
        with contextlib.ExitStack() as stack:
            urls, servers = {}, {}
            for kind, selector in KINDS:
                servers[kind] = server = Server(kind, tls)
                base = stack.enter_context(server)
                query = f"?labelSelector=model%3D{selector}" if selector else ""
                urls[kind] = f"{base}{PATH}{query}"
            runs: dict[str, list[Figures]] = {kind: [] for kind, _ in KINDS}
            cpu: dict[str, list[float]] = {kind: [] for kind, _ in KINDS}
            wrk_paced: dict[str, list[Figures]] = {kind: [] for kind, _ in KINDS}
            open_loop: dict[str, list[Figures]] = {kind: [] for kind, _ in KINDS}
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            for _ in range(args.rounds):  # interleaved, so load changes hit every server alike
                for kind, _selector in KINDS:
                    before = servers[kind].cpu_seconds()
                    runs[kind].append(measure(urls[kind], args.seconds, use_wrk))
                    used = servers[kind].cpu_seconds() - before
                    cpu[kind].append(used / (runs[kind][-1].rps * args.seconds) * 1e6)
                    if use_wrk:
                        wrk_paced[kind].append(
                            paced_wrk(urls[kind], args.rate, args.seconds, folder)
                        )
                    open_loop[kind].append(asyncio.run(paced(urls[kind], args.rate, args.seconds)))
        baseline = median_figures(runs["bare"]).rps
        for kind, _selector in KINDS:
            result, loop = median_figures(runs[kind]), median_figures(open_loop[kind])
            wp = median_figures(wrk_paced[kind]) if use_wrk else Figures(0, 0, 0, 0)
            errors = result.errors + loop.errors + wp.errors
            print(
                f"{transport:9} {kind:13} {result.rps:8.0f} {result.p50_ms:7.2f}"
                f" {result.p99_ms:7.2f} {result.rps / baseline:8.0%}"
                f" {statistics.median(cpu[kind]):7.0f} | {wp.rps:7.0f}"
                f" {wp.p50_ms:7.2f} {wp.p99_ms:7.2f} | {loop.rps:7.0f} {loop.p50_ms:7.2f}"
                f" {loop.p99_ms:7.2f} {errors:6d}"
            )


if __name__ == "__main__":
    main()
