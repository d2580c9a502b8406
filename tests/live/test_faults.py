"""Faults, one test each: Prometheus down, killed, slow, garbage; Kubernetes 409, 500, timeouts;
two adapters at once. Expected: no crash, no scale-down on missing data, no duplicate
scale-up, 503 only after the staleness limit, and a clear log line for each fault."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from scaler.api.store import StaleMetricError
from scaler.core import ModelPolicy, Reason
from scaler.live.kube import DeploymentView
from scaler.metric_names import EXTERNAL_DESIRED_REPLICAS
from tests.live.conftest import (
    LEASE_NAMESPACE,
    NAMESPACE,
    Adapter,
    AdapterFactory,
    FakeSource,
    VirtualClock,
)
from tests.live.kube_standin import KubeStandIn

MIXTRAL = "mixtral-8x7b"


def events(logs: Sequence[Mapping[str, Any]]) -> set[object]:
    """The event names of captured log lines."""
    return {e["event"] for e in logs}


async def running_mixtral(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """Bring Mixtral to 1 ready replica through a scale-from-zero (leaves the load at zero)."""
    source.set(MIXTRAL, queue_depth=1.0)
    await make_adapter().tick()
    standin.set_ready(NAMESPACE, MIXTRAL, 1)
    source.set(MIXTRAL)
    clock.advance(5)


# ---- Prometheus -------------------------------------------------------------------------------


async def test_prometheus_down_at_start_holds_and_stays_unready(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """With Prometheus down from the start: no scale writes, values 503, a clear log line."""
    source.down = True
    adapter = make_adapter()
    with capture_logs() as logs:
        for _ in range(3):
            result = await adapter.tick()
            clock.advance(5)
    assert not result.source_ok
    assert "prometheus_unavailable" in events(logs)
    assert standin.writes("deployments", "scale") == []
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert Reason.NO_DATA in latest.reasons
    with pytest.raises(StaleMetricError):
        adapter.store.value(EXTERNAL_DESIRED_REPLICAS, MIXTRAL, clock.now)


async def test_prometheus_killed_mid_run_never_scales_mixtral_to_zero(
    make_adapter: AdapterFactory,
    standin: KubeStandIn,
    source: FakeSource,
    clock: VirtualClock,
    policies: list[ModelPolicy],
) -> None:
    """Prometheus dies while Mixtral idles: no scale-to-zero however long the outage, the last
    good value is served until the staleness limit and 503 after it."""
    await running_mixtral(make_adapter, standin, source, clock)
    adapter = make_adapter()
    await adapter.tick()
    last_good = clock.now
    source.down = True
    rule = next(p for p in policies if p.model == MIXTRAL).scale_to_zero
    assert rule is not None
    clock.advance(30)
    await adapter.tick()
    value = adapter.store.value(EXTERNAL_DESIRED_REPLICAS, MIXTRAL, clock.now)
    assert value.value == 1.0  # within the 60 s staleness limit: last good value
    with capture_logs() as logs:
        while clock.now < last_good + 2 * rule.idle_seconds:
            clock.advance(60)
            await adapter.tick()
    assert "prometheus_unavailable" in events(logs)
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
    with pytest.raises(StaleMetricError):
        adapter.store.value(EXTERNAL_DESIRED_REPLICAS, MIXTRAL, clock.now)


async def test_prometheus_slower_than_the_timeout_gives_a_tick_without_data(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A source that never answers is cut at the read timeout; the tick holds and logs it."""
    await running_mixtral(make_adapter, standin, source, clock)
    source.slow = True
    adapter = make_adapter(read_timeout=0.05)
    with capture_logs() as logs:
        result = await adapter.tick()
    assert not result.source_ok
    assert "prometheus_timeout" in events(logs)
    assert result.decisions[MIXTRAL].desired_replicas == 1


async def test_prometheus_garbage_and_nan_hold(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """NaN values and failed queries are missing data: hold, log, never scale down."""
    await running_mixtral(make_adapter, standin, source, clock)
    source.garbage = True
    adapter = make_adapter()
    with capture_logs() as logs:
        result = await adapter.tick()
    assert {"prometheus_unavailable", "prometheus_garbage_values"} <= events(logs)
    assert result.decisions[MIXTRAL].desired_replicas == 1
    assert Reason.NO_DATA in result.decisions[MIXTRAL].reasons


# ---- Kubernetes API ---------------------------------------------------------------------------


async def test_scale_conflict_is_reread_and_retried_once(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource
) -> None:
    """A 409 on the scale write re-reads the scale and retries once: one write lands."""
    source.set(MIXTRAL, queue_depth=1.0)
    standin.fail_next("patch", "deployments", "scale", status=409)
    with capture_logs() as logs:
        result = await make_adapter().tick()
    assert result.scale_writes == {MIXTRAL: "ok"}
    assert "scale_write_conflict" in events(logs)
    assert ("get", "apps", "deployments", "scale") in standin.calls()
    assert len(standin.writes("deployments", "scale")) == 1


async def test_scale_conflict_with_a_change_we_had_not_seen_is_not_overwritten(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource
) -> None:
    """If the re-read shows somebody already scaled Mixtral up, we do not write again."""
    source.set(MIXTRAL, queue_depth=1.0)
    adapter = make_adapter()
    # Someone scales it between our read and our write: our precondition fails.
    original = adapter.api.read_deployment

    async def read_then_race(namespace: str, name: str) -> DeploymentView:
        view = await original(namespace, name)
        if name == MIXTRAL:
            version = view.resource_version
            await adapter.api.patch_scale(namespace, name, 1, resource_version=version)
        return view

    adapter.api.read_deployment = read_then_race  # type: ignore[method-assign]
    result = await adapter.tick()
    assert result.scale_writes == {MIXTRAL: "unchanged"}
    assert len(standin.writes("deployments", "scale")) == 1  # the other writer's only


async def test_scale_500_is_counted_and_retried_next_tick(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A 500 on the scale write does not crash the loop; the next tick writes it, once."""
    source.set(MIXTRAL, queue_depth=1.0)
    adapter = make_adapter()
    standin.fail_next("patch", "deployments", "scale", status=500)
    with capture_logs() as logs:
        first = await adapter.tick()
    assert first.scale_writes == {MIXTRAL: "error"}
    assert "scale_write_failed" in events(logs)
    clock.advance(5)
    await adapter.tick()
    clock.advance(5)
    await adapter.tick()
    assert len(standin.writes("deployments", "scale")) == 1
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1


async def test_scale_timeout_after_apply_is_not_repeated(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A write that landed but whose answer timed out is seen on the next read: no second
    scale-up."""
    source.set(MIXTRAL, queue_depth=1.0)
    adapter = make_adapter(request_timeout=1.0)
    standin.fail_next("patch", "deployments", "scale", after_apply=True)
    first = await adapter.tick()
    assert first.scale_writes == {MIXTRAL: "timeout"}
    for _ in range(3):
        clock.advance(5)
        second = await adapter.tick()
        assert second is not None
        assert second.scale_writes == {}
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
    patches = [r for r in standin.requests if r.verb == "patch" and r.subresource == "scale"]
    assert len(patches) == 1


async def test_deployment_read_timeout_skips_actuation_for_that_model(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A timed-out Deployment read is logged; the model is not actuated on an old read."""
    adapter = make_adapter(request_timeout=1.0)
    await adapter.tick()
    source.set(MIXTRAL, queue_depth=1.0)
    clock.advance(5)
    standin.fail_next("get", "deployments", timeout=True, times=4)
    with capture_logs() as logs:
        result = await adapter.tick()
    assert "kubernetes_read_failed" in events(logs)
    assert result.scale_writes == {}
    assert result.decisions.keys() == {
        "deepseek-coder",
        "mistral-7b",
        "mixtral-8x7b",
        "tinyllama",
    }  # still decided, on the last read


# ---- two adapters -----------------------------------------------------------------------------


async def test_two_adapters_one_actuates_the_other_only_serves(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """A leads and writes the scale; B decides and serves the same values, never writes."""
    a, b = make_adapter("scaler-a"), make_adapter("scaler-b")
    await a.tick()
    await b.tick()
    source.set(MIXTRAL, queue_depth=1.0)
    clock.advance(5)
    await a.tick()
    await b.tick()
    writers = {r.user_agent for r in standin.requests if r.verb in ("patch", "create") and r.status}
    assert writers == {"scaler-a"}  # scale, state annotation, event: A only; B never writes
    b_latest = b.store.latest(MIXTRAL)
    assert b_latest is not None
    assert b_latest.desired_replicas == 1  # B serves the decision too
    assert len(standin.writes("deployments", "scale")) == 1
    lease = standin.lease(LEASE_NAMESPACE, "scaler")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "scaler-a"


async def test_follower_takes_over_after_the_leader_dies(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """When A stops (no release, e.g. node loss), B actuates after the lease expires."""
    a, b = make_adapter("scaler-a"), make_adapter("scaler-b")
    await a.tick()
    await b.tick()
    source.set(MIXTRAL, queue_depth=1.0)
    clock.advance(5)
    await b.tick()
    assert standin.writes("deployments", "scale") == []  # B is not leader: no write
    clock.advance(16)  # A is gone: its lease expires
    await b.tick()
    assert b.elector is not None
    assert b.elector.is_leader
    assert len(standin.writes("deployments", "scale")) == 1
    assert standin.events[-1]["reportingInstance"] == "scaler-b"


async def leader_and_diverged_follower(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> tuple[Adapter, Adapter, float]:
    """Leader A and follower B on a running Mixtral, where B alone missed a tick (its idle
    run restarted); returns A, B and A's idle_since, which A has persisted."""
    await running_mixtral(make_adapter, standin, source, clock)
    a = make_adapter("scaler-a")
    b_source = FakeSource(clock=clock)
    b = make_adapter("scaler-b", adapter_source=b_source)
    await a.tick()
    await b.tick()
    a_idle_since = a.loop.states[MIXTRAL].idle_since
    assert a_idle_since is not None
    b_source.down = True  # B alone misses a tick: its idle run restarts
    clock.advance(5)
    await a.tick()
    await b.tick()
    b_source.down = False
    return a, b, a_idle_since


async def test_new_leader_adopts_the_persisted_state(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """B's own idle timer was broken by a gap in its data; on taking over it reloads A's
    persisted timer from the annotation, so Mixtral's idle period is not counted anew."""
    a, b, a_idle_since = await leader_and_diverged_follower(make_adapter, standin, source, clock)
    clock.advance(5)
    await a.tick()
    await b.tick()
    assert b.loop.states[MIXTRAL].idle_since != a_idle_since
    clock.advance(16)  # A dies; its lease expires
    await b.tick()
    assert b.elector is not None
    assert b.elector.is_leader
    assert b.loop.states[MIXTRAL].idle_since == a_idle_since


async def test_new_leader_adopts_the_persisted_state_after_a_failed_read(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """B takes over in a tick whose Deployment reads fail: it adopts A's persisted idle timer
    at its next successful read instead of keeping its own."""
    _a, b, a_idle_since = await leader_and_diverged_follower(make_adapter, standin, source, clock)
    clock.advance(16)  # A dies; its lease expires
    standin.fail_next("get", "deployments", status=500, times=4)
    await b.tick()
    assert b.elector.is_leader
    assert b.loop.states[MIXTRAL].idle_since != a_idle_since
    clock.advance(5)
    await b.tick()
    assert b.loop.states[MIXTRAL].idle_since == a_idle_since


async def test_an_outage_warns_once_and_its_end_is_logged(
    make_adapter: AdapterFactory, source: FakeSource, clock: VirtualClock
) -> None:
    """A long outage is one warning (repeats at debug level), and recovery one info line."""
    adapter = make_adapter()
    await adapter.tick()
    source.down = True
    with capture_logs() as logs:
        for _ in range(5):
            clock.advance(5)
            await adapter.tick()
        source.down = False
        clock.advance(5)
        await adapter.tick()
    outage = [e["log_level"] for e in logs if e["event"] == "prometheus_unavailable"]
    assert outage == ["warning"] + ["debug"] * 4
    assert [e["event"] for e in logs if e["event"] == "prometheus_recovered"] == [
        "prometheus_recovered"
    ]
