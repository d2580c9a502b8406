"""The control loop against the Kubernetes API stand-in: publish, actuate, events, modes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes_validate
from aiohttp import web
from structlog.testing import capture_logs

from scaler.api.store import DecisionStore
from scaler.core import ModelPolicy, Reason
from scaler.live.loop import ControlLoop
from scaler.live.persistence import STATE_ANNOTATION
from scaler.sources import PrometheusSource, ReplicaCount
from tests.live.conftest import (
    MODELS,
    NAMESPACE,
    AdapterFactory,
    FakeSource,
    VirtualClock,
)
from tests.live.kube_standin import SCHEMA_VERSION, KubeStandIn

MIXTRAL = "mixtral-8x7b"


async def test_every_model_is_decided_and_published(make_adapter: AdapterFactory) -> None:
    """One tick publishes a decision for each of the four models to the store."""
    adapter = make_adapter()
    await adapter.tick()
    assert {m for m in MODELS if adapter.store.latest(m) is not None} == set(MODELS)


async def test_activation_scales_mixtral_from_zero_once(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A queued request for Mixtral at 0 writes scale 0->1 once; later ticks do not repeat it."""
    adapter = make_adapter()
    await adapter.tick()
    assert standin.writes("deployments", "scale") == []
    source.set(MIXTRAL, queue_depth=1.0)
    for _ in range(3):
        clock.advance(5)
        await adapter.tick()
    assert len(standin.writes("deployments", "scale")) == 1
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1


async def test_scale_write_event_carries_the_reasons(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource
) -> None:
    """The scale-from-zero write files a schema-valid Event whose reason is ScaleFromZero."""
    source.set(MIXTRAL, queue_depth=2.0)
    await make_adapter().tick()
    assert len(standin.events) == 1
    event = standin.events[0]
    kubernetes_validate.validate(event, SCHEMA_VERSION, strict=True)
    assert event["reason"] == Reason.SCALE_FROM_ZERO.value
    assert event["regarding"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": MIXTRAL,
        "namespace": NAMESPACE,
    }
    assert "from 0 to 1" in event["note"]
    assert "ScaleFromZero" in event["note"]


async def test_idle_mixtral_goes_to_zero_after_the_idle_period_only(
    make_adapter: AdapterFactory,
    standin: KubeStandIn,
    source: FakeSource,
    clock: VirtualClock,
    policies: list[ModelPolicy],
) -> None:
    """Mixtral at 1 replica with no load is scaled to 0 once the keep-alive has passed: with
    no idle gap learned yet, the restart's cost (the deterministic ski rental), at most
    idleSeconds."""
    mixtral = next(p for p in policies if p.model == MIXTRAL)
    assert mixtral.scale_to_zero is not None
    keep_alive = min(mixtral.scale_to_zero.idle_seconds, mixtral.restart_cost_seconds)
    adapter = make_adapter()
    source.set(MIXTRAL, queue_depth=1.0)
    await adapter.tick()
    standin.set_ready(NAMESPACE, MIXTRAL, 1)
    source.set(MIXTRAL)  # idle from here
    clock.advance(5)
    await adapter.tick()
    idle_start = clock.now
    while clock.now - idle_start < keep_alive - 60:
        clock.advance(60)
        await adapter.tick()
        assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
    clock.advance(120)
    await adapter.tick()
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 0
    assert standin.events[-1]["reason"] == Reason.SCALE_TO_ZERO.value


async def test_always_on_models_are_never_scaled_by_us(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource
) -> None:
    """A heavy load on mistral-7b changes the published decision, never its scale: HPA's job."""
    source.set("mistral-7b", queue_depth=50.0, inflight_requests=80.0)
    adapter = make_adapter()
    await adapter.tick()
    latest = adapter.store.latest("mistral-7b")
    assert latest is not None
    assert latest.desired_replicas > 1
    assert standin.writes("deployments", "scale") == []


async def test_no_write_when_desired_equals_spec(
    make_adapter: AdapterFactory, standin: KubeStandIn, clock: VirtualClock
) -> None:
    """With nothing to change, ticks make no scale writes and no events."""
    adapter = make_adapter()
    for _ in range(3):
        await adapter.tick()
        clock.advance(5)
    assert standin.writes("deployments", "scale") == []
    assert standin.events == []


async def test_state_annotation_written_by_leader(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource
) -> None:
    """After a scale-from-zero the Deployment carries the model's state as JSON."""
    source.set(MIXTRAL, queue_depth=1.0)
    await make_adapter().tick()
    raw = standin.deployment(NAMESPACE, MIXTRAL)["metadata"]["annotations"][STATE_ANNOTATION]
    assert json.loads(raw)["lastDesired"] == 1


async def test_one_log_line_per_changed_decision(
    make_adapter: AdapterFactory, source: FakeSource, clock: VirtualClock
) -> None:
    """A decision logs when its desired count or reasons change, not on every tick."""
    adapter = make_adapter()
    with capture_logs() as logs:
        await adapter.tick()
        clock.advance(5)
        await adapter.tick()
        source.set(MIXTRAL, queue_depth=1.0)
        clock.advance(5)
        await adapter.tick()
    mixtral = [e for e in logs if e["event"] == "decision" and e["model"] == MIXTRAL]
    assert [e["desired"] for e in mixtral] == [0, 1]
    assert "ScaleFromZero" in mixtral[-1]["reasons"]


async def test_placement_is_read_from_nodes_and_pods(make_adapter: AdapterFactory) -> None:
    """In Kubernetes mode the placement cap comes from node memory: Mixtral fits 3 nodes."""
    adapter = make_adapter()
    await adapter.tick()
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert latest.placement_cap is not None


async def test_a_terminating_pod_holds_its_node_and_a_finished_one_does_not(
    make_adapter: AdapterFactory, standin: KubeStandIn
) -> None:
    """Mixtral (30 GiB, one a node) fits the three 96 GiB nodes: cap 3. A Mixtral pod in its
    termination grace period still holds ms01-1, and it is not a replica: the cap is 2, so
    the replacement is not asked for before there is room (it would sit Pending). A
    Succeeded pod on ms01-2 holds nothing."""
    adapter = make_adapter()
    await adapter.tick()
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert latest.placement_cap == 3
    labels = {"app": MIXTRAL}
    standin.add_pod(NAMESPACE, "mixtral-done", labels=labels, node="ms01-2", phase="Succeeded")
    await adapter.tick()
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert latest.placement_cap == 3
    standin.add_pod(NAMESPACE, "mixtral-old", labels=labels, node="ms01-1", deleting=True)
    await adapter.tick()
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert latest.placement_cap == 2


async def test_no_kubernetes_mode_reads_replicas_from_the_source(
    policies: list[ModelPolicy], source: FakeSource, clock: VirtualClock
) -> None:
    """Without Kubernetes, replicas come from the source and placement is unknown."""
    source.replicas = {m: ReplicaCount(current=2, ready=2) for m in MODELS}
    store = DecisionStore(MODELS, staleness_seconds=60)
    loop = ControlLoop(policies=policies, source=source, store=store, clock=clock)
    result = await loop.tick()
    assert not result.leader
    assert result.scale_writes == {}
    latest = store.latest("tinyllama")
    assert latest is not None
    assert latest.current_replicas == 2
    assert latest.placement_cap is None


async def test_ready_after_first_successful_tick(
    policies: list[ModelPolicy], source: FakeSource, clock: VirtualClock
) -> None:
    """Readiness is marked by the first tick in which the source answered, not before."""

    class Flag:
        ready = False

        def mark_ready(self) -> None:
            self.ready = True

    flag = Flag()
    source.replicas = {m: ReplicaCount(1, 1) for m in MODELS}
    store = DecisionStore(MODELS, staleness_seconds=60)
    loop = ControlLoop(policies=policies, source=source, store=store, clock=clock, health=flag)
    source.down = True
    await loop.tick()
    assert not flag.ready
    source.down = False
    await loop.tick()
    assert flag.ready


async def test_a_flaky_prometheus_gives_one_warning_per_fault_and_one_on_recovery(
    aiohttp_server: Any, policies: list[ModelPolicy], clock: VirtualClock
) -> None:
    """The real PrometheusSource in --no-kubernetes mode against a Prometheus that answers
    503 on odd ticks and stalls past the read timeout on even ones, for 20 ticks: each kind
    of fault warns once (none per query, none per tick), and recovery logs one info line."""
    mode = {"now": "fail"}

    async def query(request: web.Request) -> web.Response:
        if mode["now"] == "stall":
            await asyncio.sleep(1)
        if mode["now"] != "ok":
            return web.json_response({"status": "error", "error": "down"}, status=503)
        return web.json_response({"status": "success", "data": {"result": []}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app)
    store = DecisionStore([p.model for p in policies], staleness_seconds=60)
    async with PrometheusSource(url=str(server.make_url("")), timeout=0.5) as source:
        loop = ControlLoop(
            policies=policies, source=source, store=store, clock=clock, read_timeout=0.3
        )
        with capture_logs() as logs:
            for tick in range(20):
                mode["now"] = "stall" if tick % 2 else "fail"
                await loop.tick()
                clock.advance(5)
            mode["now"] = "ok"
            await loop.tick()
    warnings = [(e["event"], e.get("model")) for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == len(set(warnings)), warnings
    # 503, timeout, replica counts cut; the models whose replicas were never known
    assert len(warnings) == 3 + len(policies), warnings
    assert [e["event"] for e in logs if e["event"].endswith("_recovered")] == [
        "prometheus_recovered",
        "replica_counts_recovered",
    ]
