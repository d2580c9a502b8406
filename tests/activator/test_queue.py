"""ModelGate: release in arrival order, one dispatched request at a time, no overtaking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from scaler.activator.endpoints import EndpointTracker, HealthProbe
from scaler.activator.metrics import ActivatorMetrics
from scaler.activator.queue import ModelGate, QueueFullError, Turn
from scaler.activator.routes import build_routes
from tests.activator.model_server import ModelServerEmulator, until
from tests.builders import make_policy


@pytest.fixture
def metrics() -> ActivatorMetrics:
    """The gate's metrics (a test may watch its pending gauge)."""
    return ActivatorMetrics(("tinyllama",))


@pytest.fixture
async def gate(metrics: ActivatorMetrics) -> AsyncIterator[tuple[ModelGate, EndpointTracker]]:
    """A gate for tinyllama in front of a loaded emulator, readiness set by the test; the
    dispatch timeout is far beyond any wait here, so only a dispatch releases the next."""
    policy = make_policy("tinyllama", coldStart={"seconds": 60, "overdueFactor": 1.0})
    async with ModelServerEmulator() as server, aiohttp.ClientSession() as session:
        (route,) = build_routes([policy], upstreams={"tinyllama": server.url})
        tracker = EndpointTracker()
        model_gate = ModelGate(
            route=route,
            tracker=tracker,
            probe=HealthProbe(session),
            metrics=metrics,
            capacity=3,
            probe_interval_s=0.01,
            dispatch_timeout_s=60.0,
        )
        yield model_gate, tracker
        await model_gate.close()


async def settle() -> None:
    """Let every ready task run (a few loop turns; no wall-clock wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_next_request_goes_only_after_the_previous_was_dispatched(
    gate: tuple[ModelGate, EndpointTracker],
) -> None:
    """Released one at a time: the second waits until the first's headers are out."""
    model_gate, tracker = gate
    first = asyncio.create_task(model_gate.admit())
    second = asyncio.create_task(model_gate.admit())
    await until(lambda: model_gate.pending == 2, what="2 held")
    tracker.set_ready("tinyllama", 1)
    turn: Turn = await asyncio.wait_for(first, 10)
    assert turn.held
    await settle()
    assert not second.done()
    assert model_gate.pending == 1
    turn.dispatched()
    assert (await asyncio.wait_for(second, 10)).held


async def test_requests_arriving_while_the_queue_drains_queue_behind_it(
    gate: tuple[ModelGate, EndpointTracker],
) -> None:
    """A newcomer during the drain does not overtake the held requests."""
    model_gate, tracker = gate
    first = asyncio.create_task(model_gate.admit())
    second = asyncio.create_task(model_gate.admit())
    await until(lambda: model_gate.pending == 2, what="2 held")
    tracker.set_ready("tinyllama", 1)
    turn = await asyncio.wait_for(first, 10)
    newcomer = asyncio.create_task(model_gate.admit())
    await settle()
    assert model_gate.pending == 2  # the second and the newcomer, in that order
    assert not newcomer.done()
    turn.dispatched()
    (await asyncio.wait_for(second, 10)).dispatched()
    assert (await asyncio.wait_for(newcomer, 10)).held
    assert model_gate.warm


async def test_a_warm_gate_with_an_empty_queue_admits_at_once(
    gate: tuple[ModelGate, EndpointTracker],
) -> None:
    """Warm and nobody waiting: no queueing at all."""
    model_gate, tracker = gate
    tracker.set_ready("tinyllama", 1)
    first = asyncio.create_task(model_gate.admit())
    (await asyncio.wait_for(first, 10)).dispatched()
    await settle()  # the releaser ends one loop turn after the last dispatch
    assert model_gate.warm
    assert not (await model_gate.admit()).held


async def test_losing_every_endpoint_makes_the_gate_cold_again(
    gate: tuple[ModelGate, EndpointTracker],
) -> None:
    """Scaled to zero: the next request is held (and probed again before it goes)."""
    model_gate, tracker = gate
    tracker.set_ready("tinyllama", 1)
    (await asyncio.wait_for(model_gate.admit(), 10)).dispatched()
    tracker.set_ready("tinyllama", 0)
    assert not model_gate.warm
    held = asyncio.create_task(model_gate.admit())
    await until(lambda: model_gate.pending == 1, what="held")
    tracker.set_ready("tinyllama", 1)
    assert (await asyncio.wait_for(held, 10)).held


async def test_capacity_is_enforced(gate: tuple[ModelGate, EndpointTracker]) -> None:
    """The fourth request on a capacity-3 queue is refused at once."""
    model_gate, _tracker = gate
    held = [asyncio.create_task(model_gate.admit()) for _ in range(3)]
    await until(lambda: model_gate.pending == 3, what="3 held")
    with pytest.raises(QueueFullError):
        await model_gate.admit()
    for task in held:
        task.cancel()
    await until(lambda: model_gate.pending == 0, what="the queue to empty")


async def test_a_request_cancelled_at_its_release_does_not_delay_the_next(
    gate: tuple[ModelGate, EndpointTracker],
    metrics: ActivatorMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client gone in the instant its request is released never dispatches: the next held
    request goes at once, not after the dispatch timeout."""
    model_gate, tracker = gate
    first = asyncio.create_task(model_gate.admit())
    second = asyncio.create_task(model_gate.admit())
    await until(lambda: model_gate.pending == 2, what="2 held")
    loop = asyncio.get_running_loop()
    pending = metrics.pending.labels(model="tinyllama")
    set_pending = pending.set

    def set_and_disconnect(value: float) -> None:
        set_pending(value)
        if value == 1 and model_gate.warm:  # the releaser took the first off the queue
            # Queued before the first's wake-up: it is cancelled after being released.
            loop.call_soon(first.cancel)

    monkeypatch.setattr(pending, "set", set_and_disconnect)
    tracker.set_ready("tinyllama", 1)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await asyncio.wait_for(second, 10)).held
