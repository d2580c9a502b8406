"""External metrics API throughput and latency on loopback, next to a bare aiohttp handler.

Each server runs in its own process (this script with ``--serve``), so the client does not
share an interpreter with it. Measured in the same run, with the same clients:

* ``bare``: an aiohttp app with one route returning a fixed body (our 4-model response),
  no middleware: the ceiling any aiohttp server on this machine reaches;
* ``api-4`` / ``api-1000``: scaler's app (authentication guard, self-metrics, store) with 4
  and 1,000 models published once, asking for one model by ``model=<name>`` as the HPA does:
  a lookup of the body rendered when the decision was published;
* ``api-4-publish`` / ``api-1000-publish``: the HPA's path in production, where a tick
  publishes between two of its syncs: a publisher thread in the server republishes every
  model's decision every ``--publish-every`` seconds (5, the tick) while the clients run,
  preparing the snapshot (rendering every answer) in its thread, committing it on the
  event loop and releasing the one it replaced in its thread (the control loop itself
  does both on the event loop, in slices: see ``-ticks``); threads switch every 0.1 ms,
  as under the control loop;
* ``api-1000-general``: the same question put as ``model in (<name>)``, which takes the
  general selector path (parse, select, read, render) on every request;
* ``api-1000-ticks``: the real control loop (``--no-kubernetes``, a synthetic source whose
  load moves every tick, self-metrics and JSON decision logs to /dev/null) ticking over
  1,000 models every ``--tick-every`` seconds (5) in the server process. Its paced runs last
  ``--tick-seconds`` (15), so each spans several ticks; the server reports the ticks' wall
  times at the end.

Two measurements per server and transport (plain HTTP and TLS):

* throughput: ``wrk`` (1 thread, 16 connections) when installed, else an aiohttp client
  with 16 concurrent connections; requests/s and p50/p99 latency, the median of several
  rounds that alternate between the servers (the machine is shared, load drifts), and the
  server process's CPU time per request (``cpu us``, from /proc: less sensitive to the load
  other processes put on the machine; it includes the publisher's or the loop's CPU);
  ``vs bare`` is the median over rounds of requests/s divided by the bare server's,
  measured just before (every server's run is preceded by one of the bare server);
* paced at 500 requests/s, p50/p99: wrk with a think time per connection (the latency of
  the server, without Python client jitter), and an open-loop aiohttp client (honest about
  queueing, but its own scheduling jitter on a loaded machine shows in the p99).

TLS runs have no client certificate (wrk cannot present one) and anonymous allowed; the
handshake happens once per connection either way.

    python benchmarks/api_throughput.py [--seconds 3] [--rounds 3] [--rate 500]
        [--transport both] [--publish-every 5] [--tick-every 5] [--tick-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from scaler.api.auth import Authenticator
from scaler.api.selfmetrics import Health, SelfMetrics
from scaler.api.server import build_app, serve_api
from scaler.api.store import DecisionStore, Snapshot
from scaler.api.tls import serving_ssl_context
from scaler.core import Decision, ModelPolicy, Reason, Signal
from scaler.live.loop import SWITCH_INTERVAL_SECONDS, ControlLoop, TickResult
from scaler.live.serve import configure_logging
from scaler.metric_names import EXTERNAL_DESIRED_REPLICAS
from scaler.policy import load_policies
from scaler.sources import ModelReading, ReplicaCount, SourceReading

NAMESPACE = "cortex"
PATH = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{EXTERNAL_DESIRED_REPLICAS}"
CONNECTIONS = 16
POLICIES = Path(__file__).resolve().parent.parent / "policies"


def model_names(count: int) -> list[str]:
    """The four homelab models, or `count` synthetic ones."""
    if count == 4:
        return ["tinyllama", "mistral-7b", "deepseek-coder", "mixtral-8x7b"]
    return [f"model-{i:04d}" for i in range(count)]


def decisions(models: Sequence[str], now: float) -> list[Decision]:
    """One fresh decision per model, with two signals read."""
    out = []
    for i, model in enumerate(models):
        signals = {Signal.QUEUE_DEPTH: i * 0.5, Signal.TOKENS_PER_SECOND: 100.0 + i}
        out.append(Decision(model, now, 2, 2, 2, 0, signals, {}, 2, None, (Reason.DEMAND,)))
    return out


def api_app(store: DecisionStore, metrics: SelfMetrics, models: Sequence[str]) -> web.Application:
    """scaler's API app over `store`, every model served in NAMESPACE."""
    return build_app(
        store=store,
        metrics=metrics,
        health=Health(),
        authenticator=Authenticator(allow_anonymous=True),
        namespaces=dict.fromkeys(models, NAMESPACE),
    )


def republish(
    store: DecisionStore,
    models: Sequence[str],
    loop: asyncio.AbstractEventLoop,
    every: float,
    stop: threading.Event,
) -> None:
    """Publisher thread: every `every` s, prepare a publish of every model here, commit it on
    the event loop, where the requests are served, and release what it replaced here, a
    model at a time (as the control loop does on the event loop, in slices)."""
    while not stop.wait(every):
        snapshot = store.prepare(decisions(models, time.time()))
        committed = asyncio.run_coroutine_threadsafe(_commit(store, snapshot), loop)
        for _ in committed.result().release():
            pass


async def _commit(store: DecisionStore, snapshot: Snapshot) -> Snapshot:
    return store.commit(snapshot)


def fleet(count: int) -> list[ModelPolicy]:
    """`count` policies cloned from the shipped ones, named like model_names(count)."""
    shipped = load_policies(POLICIES)
    return [
        shipped[i % len(shipped)].model_copy(update={"model": name})
        for i, name in enumerate(model_names(count))
    ]


@dataclass
class MovingSource:
    """A --no-kubernetes metrics source for the loop: every model's load moves every read,
    so each tick changes decisions, self-metrics and log lines, as a busy cluster does."""

    reads: int = 0

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """Every model's four signals, a new level each read."""
        self.reads += 1
        now = time.time()
        models = {}
        for i, policy in enumerate(policies):
            level = float((i * 7 + self.reads * 3) % 13)
            signals = {
                Signal.QUEUE_DEPTH: level,
                Signal.TOKENS_PER_SECOND: level * 4.0,
                Signal.INFLIGHT_REQUESTS: level + 1.0,
                Signal.REQUEST_RATE: level / 20.0,
            }
            models[policy.model] = ModelReading(signals, now)
        return SourceReading(models, ())

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> dict[str, ReplicaCount]:
        """One to three replicas per model, steady."""
        return {p.model: ReplicaCount(1 + i % 3, 1 + i % 2) for i, p in enumerate(policies)}


class TimedLoop(ControlLoop):
    """The control loop, recording each tick's wall time."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tick_seconds: list[float] = []

    async def tick(self) -> TickResult:
        """One tick, timed."""
        started = time.perf_counter()
        result = await super().tick()
        self.tick_seconds.append(time.perf_counter() - started)
        return result


def bare_body() -> bytes:
    """The 4-model answer for mistral-7b, fixed."""
    return json.dumps(
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


def bare_app(body: bytes) -> web.Application:
    """One route returning `body`, no middleware: the baseline."""

    async def fixed(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(PATH, fixed)
    return app


async def serve(kind: str, tls: bool, *, publish_every: float, tick_every: float) -> None:
    """Child process: serve `kind` on a free port, print the port, run until stdin closes;
    then print a line about the ticks it ran (``ticks`` kinds) or an empty one."""
    out = sys.stdout
    loop = asyncio.get_running_loop()
    stop, background = threading.Event(), contextlib.ExitStack()
    control: TimedLoop | None = None
    count, _, variant = kind.removeprefix("api-").partition("-")
    if kind == "bare":
        app = bare_app(bare_body())
    elif variant == "ticks":
        policies = fleet(int(count))
        models = [p.model for p in policies]
        store = DecisionStore(models, staleness_seconds=3600)
        metrics = SelfMetrics()
        control = TimedLoop(
            policies=policies, source=MovingSource(), store=store, clock=time.time, metrics=metrics
        )
        configure_logging()  # the adapter's JSON decision lines, written where nobody reads
        sys.stdout = background.enter_context(open(os.devnull, "w"))  # noqa: SIM115
        await control.tick()  # served from the first request on
        app = api_app(store, metrics, models)
    else:
        models = model_names(int(count))
        store = DecisionStore(models, staleness_seconds=3600)
        store.publish_all(decisions(models, time.time()))
        app = api_app(store, SelfMetrics(), models)
        if variant == "publish":
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # as ControlLoop.run() sets it
            publisher = threading.Thread(
                target=republish, args=(store, models, loop, publish_every, stop), daemon=True
            )
            publisher.start()
    context = None
    if tls:
        context, _ = serving_ssl_context()
    with background:
        async with serve_api(app, host="127.0.0.1", port=0, ssl_context=context) as endpoint:
            print(endpoint.port, file=out, flush=True)
            ticking = asyncio.Event()
            task = (
                asyncio.create_task(control.run(interval=tick_every, stop=ticking))
                if control is not None
                else None
            )
            await loop.run_in_executor(None, sys.stdin.read)
            stop.set()
            ticking.set()
            if task is not None:
                await task
    report = ""
    if control is not None and control.tick_seconds:
        ticks = sorted(control.tick_seconds[1:] or control.tick_seconds)
        report = (
            f"{len(ticks)} ticks, wall p50 {statistics.median(ticks) * 1e3:.0f} ms,"
            f" max {ticks[-1] * 1e3:.0f} ms"
        )
    print(report, file=out, flush=True)


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

    def __init__(self, kind: str, tls: bool, options: Sequence[str]) -> None:
        self.kind, self.tls, self.options = kind, tls, options
        self.report = ""

    def __enter__(self) -> str:
        args = [sys.executable, __file__, "--serve", self.kind, *self.options]
        args += ["--tls"] if self.tls else []
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
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.report = self.process.stdout.read().strip()
        self.process.wait(timeout=30)


ONE_4, ONE_1000 = "?labelSelector=model%3Dmistral-7b", "?labelSelector=model%3Dmodel-0500"
KINDS = (
    ("bare", ""),
    ("api-4", ONE_4),
    ("api-1000", ONE_1000),
    ("api-4-publish", ONE_4),
    ("api-1000-publish", ONE_1000),
    ("api-1000-general", "?labelSelector=model+in+%28model-0500%29"),
    ("api-1000-ticks", ONE_1000),
)
"""Server kind and the query it is asked (the HPA's, but for -general)."""


def measure(url: str, seconds: float, use_wrk: bool) -> Figures:
    """One throughput run against `url`."""
    return wrk(url, seconds) if use_wrk else asyncio.run(closed_loop(url, seconds))


def throughput(server: Server, url: str, seconds: float, use_wrk: bool) -> tuple[Figures, float]:
    """One throughput run against `server`, and its CPU microseconds per request."""
    before = server.cpu_seconds()
    figures = measure(url, seconds, use_wrk)
    return figures, (server.cpu_seconds() - before) / (figures.rps * seconds) * 1e6


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
    parser.add_argument(
        "--publish-every", type=float, default=5.0, help="-publish servers: seconds between"
    )
    parser.add_argument(
        "--tick-every", type=float, default=5.0, help="-ticks server: seconds between ticks"
    )
    parser.add_argument(
        "--tick-seconds", type=float, default=15.0, help="-ticks server: length of paced runs"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=[kind for kind, _ in KINDS],
        help="measure only these servers (bare is always measured: it is the reference)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(
            serve(
                args.serve, args.tls, publish_every=args.publish_every, tick_every=args.tick_every
            )
        )
        return

    kinds = [(k, q) for k, q in KINDS if k == "bare" or not args.servers or k in args.servers]
    use_wrk = shutil.which("wrk") is not None
    client = "wrk -t1" if use_wrk else "aiohttp"
    print(
        f"cpus: {os.cpu_count()}  load: {os.getloadavg()[0]:.2f}  python {sys.version.split()[0]}"
    )
    print(
        f"throughput: {client} -c{CONNECTIONS}, {args.seconds:.0f} s x {args.rounds} interleaved"
        f" rounds (median); paced at {args.rate:.0f} req/s: wrk -c{PACED_CONNECTIONS} with think"
        f" time, and an aiohttp open-loop client, {args.seconds:.0f} s each"
        f" ({args.tick_seconds:.0f} s for -ticks), median of rounds; -publish republishes every"
        f" {args.publish_every:g} s, -ticks ticks every {args.tick_every:g} s"
    )
    print(f"{'':26} {'throughput (max)':^41} | {'paced, wrk':^23} | {'paced, open loop':^23}")
    header = (
        f"{'transport':9} {'server':16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'vs bare':>8}"
        f" {'cpu us':>7}"
        f" | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    transports = {"http": (False,), "https": (True,), "both": (False, True)}[args.transport]
    options = ["--publish-every", str(args.publish_every), "--tick-every", str(args.tick_every)]
    for tls in transports:
        transport = "https" if tls else "http"
        with contextlib.ExitStack() as stack:
            urls, servers = {}, {}
            for kind, query in kinds:
                servers[kind] = server = Server(kind, tls, options)
                urls[kind] = f"{stack.enter_context(server)}{PATH}{query}"
            runs: dict[str, list[Figures]] = {kind: [] for kind, _ in kinds}
            ratios: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
            cpu: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
            wrk_paced: dict[str, list[Figures]] = {kind: [] for kind, _ in kinds}
            open_loop: dict[str, list[Figures]] = {kind: [] for kind, _ in kinds}
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))

            for _ in range(args.rounds):  # interleaved, so load changes hit every server alike
                for kind, _query in kinds:
                    # Each server's throughput right after the bare one's: the machine is
                    # shared, and its load drifts within a round too.
                    for measured in ("bare", kind) if kind != "bare" else ("bare",):
                        figures, cpu_us = throughput(
                            servers[measured], urls[measured], args.seconds, use_wrk
                        )
                        runs[measured].append(figures)
                        cpu[measured].append(cpu_us)
                    ratios[kind].append(runs[kind][-1].rps / runs["bare"][-1].rps)
                    paced_seconds = args.tick_seconds if kind.endswith("-ticks") else args.seconds
                    if use_wrk:
                        wrk_paced[kind].append(
                            paced_wrk(urls[kind], args.rate, paced_seconds, folder)
                        )
                    open_loop[kind].append(asyncio.run(paced(urls[kind], args.rate, paced_seconds)))
        for kind, _query in kinds:
            vs_bare = statistics.median(ratios[kind])
            result, loop = median_figures(runs[kind]), median_figures(open_loop[kind])
            wp = median_figures(wrk_paced[kind]) if use_wrk else Figures(0, 0, 0, 0)
            errors = result.errors + loop.errors + wp.errors
            print(
                f"{transport:9} {kind:16} {result.rps:8.0f} {result.p50_ms:7.2f}"
                f" {result.p99_ms:7.2f} {vs_bare:8.0%}"
                f" {statistics.median(cpu[kind]):7.0f} | {wp.rps:7.0f}"
                f" {wp.p50_ms:7.2f} {wp.p99_ms:7.2f} | {loop.rps:7.0f} {loop.p50_ms:7.2f}"
                f" {loop.p99_ms:7.2f} {errors:6d}"
            )
        for kind, _query in kinds:
            if servers[kind].report:
                print(f"{transport:9} {kind:16} {servers[kind].report}")


if __name__ == "__main__":
    main()
