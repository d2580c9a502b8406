"""State in the Deployment annotation: encoding, corrupt input, restarts during a cold start."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from scaler.core import ModelPolicy, ModelState
from scaler.live.persistence import (
    STATE_ANNOTATION,
    StateCheckpoints,
    decode_state,
    encode_state,
)
from tests.live.conftest import NAMESPACE, AdapterFactory, FakeSource, VirtualClock
from tests.live.kube_standin import KubeStandIn

MIXTRAL = "mixtral-8x7b"


def policy_named(policies: list[ModelPolicy], model: str) -> ModelPolicy:
    """The shipped policy of `model`."""
    return next(p for p in policies if p.model == model)


def test_state_round_trips_through_the_annotation() -> None:
    """encode_state then decode_state gives back the same ModelState."""
    state = ModelState(
        recommendations=((10.0, 2),),
        demand_history=((10.0, 1.5),),
        last_active=9.0,
        idle_since=None,
        consecutive_failures=2,
        starting_since=8.0,
        last_desired=2,
    )
    annotations = {STATE_ANNOTATION: encode_state(state)}
    assert decode_state(annotations, model="m") == state


def test_corrupt_annotation_is_logged_and_starts_fresh() -> None:
    """Garbage in the annotation gives a fresh ModelState and a warning line."""
    with capture_logs() as logs:
        state = decode_state({STATE_ANNOTATION: "{not json"}, model="m")
    assert state == ModelState()
    assert [e["event"] for e in logs] == ["state_annotation_corrupt"]
    assert logs[0]["model"] == "m"


def test_wrong_shape_annotation_is_corrupt_too() -> None:
    """Valid JSON of the wrong shape (a list, a string time) is treated as corrupt."""
    for raw in ("[1, 2]", json.dumps({"idleSince": "yesterday"})):
        assert decode_state({STATE_ANNOTATION: raw}, model="m") == ModelState()


@pytest.mark.parametrize("annotations", [{}, {STATE_ANNOTATION: "{not json"}])
async def test_restart_without_state_never_scales_down_early(
    make_adapter: AdapterFactory,
    standin: KubeStandIn,
    source: FakeSource,
    annotations: dict[str, str],
) -> None:
    """Mixtral running 2 replicas, no usable saved state, demand for 1: the new adapter holds
    2 (the down window counts from the restart) instead of dropping to the demand."""
    standin.add_deployment(
        NAMESPACE, MIXTRAL, replicas=2, labels={"app": MIXTRAL}, annotations=annotations
    )
    source.set(MIXTRAL, inflight_requests=2.0, tokens_per_second=5.0)
    adapter = make_adapter()
    await adapter.tick()
    latest = adapter.store.latest(MIXTRAL)
    assert latest is not None
    assert latest.desired_replicas == 2


async def test_restart_without_state_restarts_the_idle_timer(
    make_adapter: AdapterFactory, standin: KubeStandIn, clock: VirtualClock
) -> None:
    """An idle Mixtral at 1 replica with no saved state is not scaled to zero on the first
    tick: its idle period starts at the restart."""
    standin.add_deployment(NAMESPACE, MIXTRAL, replicas=1, labels={"app": MIXTRAL})
    adapter = make_adapter()
    await adapter.tick()
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
    assert adapter.loop.states[MIXTRAL].idle_since == clock.now


def test_checkpoints_write_milestones_at_once_and_the_rest_every_30s() -> None:
    """A changed idle timer is due at once; a changed history alone only after 30 s."""
    checkpoints = StateCheckpoints(checkpoint_seconds=30.0)
    base = ModelState(recommendations=((0.0, 1),), idle_since=0.0, last_desired=1)
    checkpoints.written("m", base, 0.0)
    assert not checkpoints.due("m", base, 5.0)
    moved = ModelState(recommendations=((5.0, 1),), idle_since=0.0, last_desired=1)
    assert not checkpoints.due("m", moved, 5.0)
    assert checkpoints.due("m", moved, 30.0)
    assert checkpoints.due("m", ModelState(idle_since=None, last_desired=1), 5.0)


async def test_restart_during_cold_start_does_not_repeat_the_scale_up(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """Adapter A scales Mixtral 0->1; a new adapter B, mid cold start, writes no scale and
    keeps A's cold-start start time (from the annotation)."""
    source.set(MIXTRAL, queue_depth=3.0)
    a = make_adapter("scaler-a")
    await a.tick()
    clock.advance(5)
    await a.tick()  # the replica is starting: starting_since recorded and persisted
    began = a.loop.states[MIXTRAL].starting_since
    assert began is not None
    assert a.elector is not None
    await a.elector.release()  # A restarts: its replacement is B

    clock.advance(5)
    b = make_adapter("scaler-b")
    for _ in range(4):
        await b.tick()
        clock.advance(5)
    assert len(standin.writes("deployments", "scale")) == 1
    assert b.loop.states[MIXTRAL].starting_since == began


async def test_restart_keeps_the_idle_timer(
    make_adapter: AdapterFactory,
    standin: KubeStandIn,
    source: FakeSource,
    clock: VirtualClock,
    policies: list[ModelPolicy],
) -> None:
    """Idle for 600 s under A, then B takes over: Mixtral goes to 0 at A's idle start + 900 s,
    neither earlier nor 900 s after the restart."""
    rule = policy_named(policies, MIXTRAL).scale_to_zero
    assert rule is not None
    source.set(MIXTRAL, queue_depth=1.0)
    a = make_adapter("scaler-a")
    await a.tick()
    standin.set_ready(NAMESPACE, MIXTRAL, 1)
    source.set(MIXTRAL)
    clock.advance(5)
    await a.tick()
    idle_since = a.loop.states[MIXTRAL].idle_since
    assert idle_since is not None
    while clock.now < idle_since + 600:
        clock.advance(60)
        await a.tick()
    assert a.elector is not None
    await a.elector.release()

    b = make_adapter("scaler-b")
    await b.tick()
    assert b.loop.states[MIXTRAL].idle_since == idle_since
    while clock.now < idle_since + rule.idle_seconds - 30:
        clock.advance(30)
        await b.tick()
        assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 1
    clock.advance(30)
    await b.tick()
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 0
