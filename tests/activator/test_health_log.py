"""Why requests are held, in the log: a failing /health is logged once per fault and once on
recovery, and a model with no --upstream outside a cluster is named at start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
from structlog.testing import capture_logs
from yarl import URL

from scaler.activator.command import ActivatorOptions, run_activator
from scaler.activator.endpoints import EndpointTracker, HealthPoll, HealthProbe
from scaler.activator.proxy import ActivatorConfig
from scaler.activator.routes import build_routes
from tests.activator.model_server import until
from tests.builders import POLICIES, make_policy


class ScriptedProbe(HealthProbe):
    """Answers from a script: None (healthy) or a fault, then healthy for ever."""

    def __init__(self, session: aiohttp.ClientSession, script: list[str | None]) -> None:
        super().__init__(session)
        self._script: Iterator[str | None] = iter(script)
        self.calls = 0

    async def fault(self, upstream: URL) -> str | None:
        self.calls += 1
        return next(self._script, None)


async def test_a_failing_health_check_is_logged_once_per_fault_then_on_recovery() -> None:
    """Five failed polls, two good, three failed, then good: two warnings (with the error
    and the hold timeout), two recoveries; the tracker follows every poll."""
    (route,) = build_routes([make_policy("tinyllama")], upstreams={"tinyllama": URL("http://x")})
    tracker = EndpointTracker()
    script: list[str | None] = ["HTTP 503"] * 5 + [None, None] + ["connection refused"] * 3
    async with aiohttp.ClientSession() as session:
        probe = ScriptedProbe(session, script)
        poll = HealthPoll(routes=[route], tracker=tracker, probe=probe, interval_s=0.001)
        with capture_logs() as logs:
            poll.start()
            try:
                await until(lambda: probe.calls > len(script) + 2, what="the script to run")
            finally:
                await poll.stop()
    events = [(e["event"], e.get("error")) for e in logs if e["event"].startswith("upstream_")]
    assert events == [
        ("upstream_unhealthy", "HTTP 503"),
        ("upstream_healthy", None),
        ("upstream_unhealthy", "connection refused"),
        ("upstream_healthy", None),
    ]
    warning = next(e for e in logs if e["event"] == "upstream_unhealthy")
    assert warning["log_level"] == "warning"
    assert warning["model"] == "tinyllama"
    assert "held (up to 60 s each)" in warning["hint"]
    assert tracker.ready("tinyllama") == 1


async def test_the_probe_says_why_a_server_is_not_healthy() -> None:
    """A refused connection is named (not just "unhealthy")."""
    async with aiohttp.ClientSession() as session:
        fault = await HealthProbe(session).fault(URL("http://127.0.0.1:9"))
    assert fault is not None
    assert "ClientConnectorError" in fault


async def test_outside_a_cluster_a_model_without_upstream_is_named_at_start() -> None:
    """--no-kubernetes, --upstream for tinyllama only: the others are named with the
    in-cluster URL their requests would go to."""
    options = ActivatorOptions(
        policies=POLICIES,
        host="127.0.0.1",
        port=0,
        config=ActivatorConfig(),
        upstreams={"tinyllama": URL("http://127.0.0.1:9")},
        kubernetes=False,
        kubeconfig=None,
        scale_on_wake=False,
        hold_margin_s=30.0,
        health_interval_s=60.0,
        drain_s=0.0,
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_activator(options=options, stop=stop))
        await until(lambda: any(e["event"] == "activator_started" for e in logs), what="start")
        stop.set()
        await task
    named = {e["model"]: e["upstream"] for e in logs if e["event"] == "upstream_not_given"}
    assert named == {
        "deepseek-coder": "http://deepseek-coder.cortex.svc:8080",
        "mistral-7b": "http://mistral-7b.cortex.svc:8000",
        "mixtral-8x7b": "http://mixtral-8x7b.cortex.svc:8080",
    }
