"""A real Prometheus for integration tests: a child process on a free loopback port.

`PrometheusServer` writes a config, starts ``/usr/bin/prometheus`` with a temporary TSDB,
scrapes the targets it is given every second, and answers instant queries for the test. It
never sleeps a fixed time: readiness and data are polled every 0.1 s with a bound.

Two things to know when writing a test against it:

- Prometheus applies new targets on its discovery tick (every 5 s), so the first sample of a
  new target is queryable 5-6 s after `start()` or `reload()`. Configure all the targets a
  module needs in one `reload()` and poll with `wait_for()`.
- Target labels stand in for Kubernetes relabeling: a `ScrapeTarget`'s `labels` are attached
  to every series scraped from it (llama.cpp series have no labels of their own), exactly as
  a ServiceMonitor copying the pod's `model` label would.

For backfilled history (``promtool tsdb create-blocks-from openmetrics``), use
`create_blocks()` then `PrometheusServer.start_on_blocks()`; such data is queryable as soon as
Prometheus is ready, with ``time=`` set inside the backfilled range.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

READY_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.1


def prometheus_binary() -> str | None:
    """The Prometheus executable to run, or None when it is not installed."""
    found = shutil.which("prometheus")
    if found is not None:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


def promtool_binary() -> str | None:
    """The promtool executable, or None when it is not installed."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    return "/usr/bin/promtool" if os.access("/usr/bin/promtool", os.X_OK) else None


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint Prometheus scrapes, with the target labels attached to its series.

    `address` is ``host:port``. `labels` play the part of relabeling from pod labels
    (``namespace``, ``model``, ...). Targets with the same `job` and `metrics_path` share a
    scrape job; each keeps its own labels.
    """

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    job: str = "models"
    metrics_path: str = "/metrics"


@dataclass(frozen=True)
class Sample:
    """One element of an instant-query result: labels, timestamp (Unix seconds), value."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query; `status` is the HTTP code (400: the PromQL did not parse)."""

    def __init__(self, status: int, message: str, query: str) -> None:
        super().__init__(f"HTTP {status} for {query!r}: {message}")
        self.status = status
        self.message = message
        self.query = query


class PrometheusServer:
    """A Prometheus child process on ``127.0.0.1:<free port>`` for one test module or session.

    Use `start()` (or the context manager), `reload(targets)` to change what is scraped,
    `query()`/`wait_for()` to read, `stop()` to terminate (SIGTERM, then wait). The TSDB and
    config live in a temporary directory removed by `stop()`, unless the TSDB was given by the
    caller (`start_on_blocks`).
    """

    def __init__(
        self,
        *,
        scrape_interval: str = "1s",
        binary: str | None = None,
        tsdb_dir: Path | None = None,
        retention: str = "100y",
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.scrape_interval = scrape_interval
        self.rule_files = tuple(rule_files)  # evaluated every scrape interval
        self._binary = binary or prometheus_binary()
        self._workdir = Path(tempfile.mkdtemp(prefix="scaler-prometheus-"))
        self.tsdb_dir = tsdb_dir if tsdb_dir is not None else self._workdir / "tsdb"
        self._retention = retention
        self._config_path = self._workdir / "prometheus.yml"
        self._log_path = self._workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.targets: tuple[ScrapeTarget, ...] = ()

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start_on_blocks(cls, tsdb_dir: Path, *, scrape_interval: str = "1s") -> PrometheusServer:
        """A started server serving an existing (e.g. backfilled) TSDB; the caller owns the dir."""
        server = cls(scrape_interval=scrape_interval, tsdb_dir=tsdb_dir)
        server.start()
        return server

    def start(self, targets: Iterable[ScrapeTarget] = ()) -> None:
        """Start Prometheus scraping `targets`; returns once /-/ready answers 200.

        Raises RuntimeError with the tail of Prometheus' log if it exits or is not ready in
        time. A lost race for the free port is retried with another port.
        """
        if self._binary is None:
            raise RuntimeError(
                "Prometheus is not installed: apt-get install -y --no-install-recommends "
                "prometheus (scripts/test does it when run as root)"
            )
        self.targets = tuple(targets)
        self._write_config()
        last_error: RuntimeError | None = None
        for _attempt in range(3):
            self._port = _free_port()
            self._spawn()
            try:
                self._wait_ready()
                return
            except RuntimeError as exc:
                last_error = exc
                self._terminate()
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Terminate Prometheus (SIGTERM, then wait) and delete the temporary files."""
        self._terminate()
        # A caller's TSDB (start_on_blocks) lives outside the work dir and is kept.
        shutil.rmtree(self._workdir, ignore_errors=True)

    def kill(self) -> None:
        """Kill Prometheus abruptly (SIGKILL), as a crash would; `stop()` still cleans up."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The loopback port Prometheus listens on."""
        if self._port is None:
            raise RuntimeError("Prometheus has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    def reload(self, targets: Iterable[ScrapeTarget]) -> None:
        """Replace the scrape targets (config rewrite + POST /-/reload).

        New targets are scraped after Prometheus' next discovery tick (up to ~5 s): poll
        with `wait_for()` or `wait_for_targets()`.
        """
        self.targets = tuple(targets)
        self._write_config()
        status, body = self._request("POST", "/-/reload")
        if status != 200:
            raise RuntimeError(f"Prometheus reload failed: HTTP {status}: {body}")

    # --- reading ---------------------------------------------------------------------------

    def query(self, expr: str, *, at: float | None = None) -> tuple[Sample, ...]:
        """Run an instant query; a scalar comes back as one Sample without labels.

        Raises PrometheusQueryError on a refused query (HTTP 400 = PromQL parse error).
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        status, body = self._request("GET", "/api/v1/query?" + urllib.parse.urlencode(params))
        if status != 200:
            try:
                message = str(json.loads(body).get("error", body))
            except ValueError:
                message = body
            raise PrometheusQueryError(status, message, expr)
        return _parse_result(json.loads(body)["data"])

    def check_query(self, expr: str) -> None:
        """Raise PrometheusQueryError if Prometheus cannot parse or run `expr`.

        promtool has no PromQL parser; this is how templates and dashboard queries are
        validated.
        """
        self.query(expr)

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[tuple[Sample, ...]], bool] = bool,
        timeout: float = 15.0,
    ) -> tuple[Sample, ...]:
        """Poll `expr` every 0.1 s until `predicate(result)` holds; return that result.

        Raises TimeoutError (with the last result) after `timeout` seconds. Blocks the
        calling thread: from a coroutine whose event loop serves a scrape target, use
        `wait_for_async`.
        """
        deadline = time.monotonic() + timeout
        result: tuple[Sample, ...] = ()
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the predicate in {timeout}s: {result}"
                )
            time.sleep(POLL_SECONDS)

    async def wait_for_async(
        self,
        expr: str,
        predicate: Callable[[tuple[Sample, ...]], bool] = bool,
        timeout: float = 15.0,
    ) -> tuple[Sample, ...]:
        """`wait_for` for coroutines: the queries run in a thread, the loop keeps serving."""
        deadline = time.monotonic() + timeout
        while True:
            result = await asyncio.to_thread(self.query, expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the predicate in {timeout}s: {result}"
                )
            await asyncio.sleep(POLL_SECONDS)

    def wait_for_targets(self, timeout: float = 15.0) -> None:
        """Poll until every configured target has been scraped successfully at least once."""
        if not self.targets:
            return
        expected = {t.address for t in self.targets}
        self.wait_for(
            "up == 1",
            lambda result: expected <= {s.labels.get("instance", "") for s in result},
            timeout,
        )

    def query_count(self) -> int:
        """How many /api/v1/query requests Prometheus has served (its own counter)."""
        status, body = self._request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"Prometheus /metrics: HTTP {status}")
        total = 0
        for line in body.splitlines():
            if line.startswith("prometheus_http_requests_total{") and (
                'handler="/api/v1/query"' in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def log(self) -> str:
        """Prometheus' own log so far (for failure messages)."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        jobs: dict[tuple[str, str], list[ScrapeTarget]] = {}
        for target in self.targets:
            jobs.setdefault((target.job, target.metrics_path), []).append(target)
        scrape_configs = [
            {
                # Two jobs may share a name only if their paths differ: suffix to stay unique.
                "job_name": job if i == 0 else f"{job}-{i}",
                "metrics_path": path,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "static_configs": [
                    {"targets": [t.address], "labels": dict(t.labels)} for t in members
                ],
            }
            for i, ((job, path), members) in enumerate(jobs.items())
        ]
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": scrape_configs,
        }
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        # JSON is YAML: no YAML emitter quirks with label values such as "on" or "0".
        self._config_path.write_text(json.dumps(config, indent=2))

    def _spawn(self) -> None:
        assert self._binary is not None
        log = self._log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    f"--config.file={self._config_path}",
                    f"--storage.tsdb.path={self.tsdb_dir}",
                    f"--storage.tsdb.retention.time={self._retention}",
                    f"--web.listen-address=127.0.0.1:{self._port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Prometheus exited with {self._process.returncode}:\n{self.log()[-2000:]}"
                )
            try:
                status, _ = self._request("GET", "/-/ready", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(POLL_SECONDS)
        raise RuntimeError(
            f"Prometheus not ready within {READY_TIMEOUT_SECONDS}s:\n{self.log()[-2000:]}"
        )

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def _request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read().decode(errors="replace")
            finally:
                exc.close()  # it holds the response socket


def _parse_result(data: Mapping[str, object]) -> tuple[Sample, ...]:
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list):
        return (Sample({}, float(result[0]), _float(result[1])),)
    if result_type != "vector" or not isinstance(result, list):
        raise ValueError(f"unsupported query result: {data}")
    samples = []
    for item in result:
        ts, value = item["value"]
        samples.append(Sample(dict(item["metric"]), float(ts), _float(value)))
    return tuple(samples)


_SPECIAL_VALUES = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def _float(value: object) -> float:
    text = str(value)
    return _SPECIAL_VALUES[text] if text in _SPECIAL_VALUES else float(text)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_blocks(openmetrics: str, tsdb_dir: Path) -> None:
    """Backfill `openmetrics` text (seconds timestamps, ends with ``# EOF``) into `tsdb_dir`.

    Runs ``promtool tsdb create-blocks-from openmetrics``; raises RuntimeError with
    promtool's output when it refuses the input.
    """
    promtool = promtool_binary()
    if promtool is None:
        raise RuntimeError("promtool is not installed (Debian package prometheus)")
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", delete=False) as handle:
        handle.write(openmetrics)
        source = handle.name
    try:
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", source, str(tsdb_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.unlink(source)
    if done.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from failed:\n{done.stdout}{done.stderr}")


def targets_for(
    servers: Sequence[tuple[str, Mapping[str, str]]], job: str = "models"
) -> tuple[ScrapeTarget, ...]:
    """Scrape targets from ``(address, labels)`` pairs (shorthand for tests)."""
    return tuple(ScrapeTarget(address, labels, job) for address, labels in servers)
