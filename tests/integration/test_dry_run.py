"""The README's dry run, as a reader runs it: the stand-in exporter, Prometheus on
docs/dry-run/prometheus.yml, and `scaler serve --no-kubernetes`, each its own process.

Only the ports differ from the README (free ones, so the test runs beside anything else):
the exporter's port is written into a copy of the shipped Prometheus config. The test reads
the answers the README shows: `scaler-desired-replicas` 1 at one request in flight, then 3
once the stand-in reports ten.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.builders import ROOT
from tests.integration.prometheus import prometheus_binary

pytestmark = pytest.mark.prometheus

DRY_RUN = ROOT / "docs" / "dry-run"
QUESTION = (
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/cortex/scaler-desired-replicas"
    "?labelSelector=model%3Dmistral-7b"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(*args: str | Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, terminated (then killed) when the block ends."""
    process = subprocess.Popen(
        [str(a) for a in args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _exporter(port: int, rate: float) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return _process(
        sys.executable, DRY_RUN / "exporter.py", "--port", str(port), "--rate", str(rate)
    )


def _desired(api: str) -> str | None:
    """The adapter's answer to the HPA's question, or None while it has none."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the dry run's certificate is self-signed (curl -k)
    try:
        with urllib.request.urlopen(api + QUESTION, context=context, timeout=2) as answer:
            body = json.load(answer)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    items = body.get("items") or [{}]
    value = items[0].get("value")
    return value if isinstance(value, str) else None


def _wait_for(api: str, expected: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _desired(api)
        if seen == expected:
            return
        time.sleep(0.5)
    pytest.fail(f"scaler-desired-replicas is {seen!r} after {timeout} s, not {expected!r}")


@pytest.mark.timeout(240)
def test_the_readme_dry_run_answers_as_it_says(tmp_path: Path) -> None:
    """One request in flight: desired 1; ten (more than a replica's four slots): desired 3."""
    binary = prometheus_binary()
    if binary is None:
        pytest.fail("Prometheus is not installed (scripts/test installs it)")
    exporter_port, prometheus_port, api_port = _free_port(), _free_port(), _free_port()
    config = yaml.safe_load((DRY_RUN / "prometheus.yml").read_text())
    (target,) = config["scrape_configs"][0]["static_configs"]
    assert target["labels"] == {"namespace": "cortex", "model": "mistral-7b"}
    target["targets"] = [f"127.0.0.1:{exporter_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    api = f"https://127.0.0.1:{api_port}"

    with (
        _process(
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ),
        _process(
            sys.executable, "-m", "scaler.cli", "serve", "--no-kubernetes", "--allow-anonymous",
            "--listen", f"127.0.0.1:{api_port}",
            "--prometheus-url", f"http://127.0.0.1:{prometheus_port}",
            "--policies", "policies/mistral-7b.yaml",
        ),
    ):  # fmt: skip
        with _exporter(exporter_port, rate=0.02):
            _wait_for(api, "1", timeout=90)
        with _exporter(exporter_port, rate=0.2):
            _wait_for(api, "3", timeout=90)
