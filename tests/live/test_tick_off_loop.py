"""A tick keeps the event loop free and reaches the API all at once.

The decision step and publishing run on the event loop a slice of models at a time; the API
answers between slices from the previous tick, and every answer comes from one whole tick,
never from part of one.
The adapter runs in --no-kubernetes mode (replica counts from the fake source), with the real
API application in front of its store.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from scaler.api.auth import Authenticator
from scaler.api.selfmetrics import Health, SelfMetrics
from scaler.api.server import build_app
from scaler.api.store import DecisionStore
from scaler.core import Decision, ModelPolicy, decide_each
from scaler.live.loop import GC_THRESHOLDS, ControlLoop, NoMetrics
from scaler.metric_names import EXTERNAL_DESIRED_REPLICAS
from scaler.sources import ReplicaCount
from tests.live.conftest import FakeSource, VirtualClock

Client = TestClient[web.Request, web.Application]
PATH = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/cortex/{EXTERNAL_DESIRED_REPLICAS}"
GENEROUS = 30.0  # seconds; a bound against hanging, not a latency claim


def adapter(
    policies: list[ModelPolicy],
    source: FakeSource,
    clock: VirtualClock,
    metrics: NoMetrics | None = None,
) -> tuple[ControlLoop, DecisionStore]:
    """A --no-kubernetes loop over `policies`, one ready replica each, and its store."""
    store = DecisionStore([p.model for p in policies], staleness_seconds=60.0)
    source.replicas = {p.model: ReplicaCount(1, 1) for p in policies}
    loop = ControlLoop(policies=policies, source=source, store=store, clock=clock, metrics=metrics)
    return loop, store


def fleet_of(policies: list[ModelPolicy], count: int) -> list[ModelPolicy]:
    """`count` policies cloned from the shipped ones, named model-000, model-001..."""
    return [
        policies[i % len(policies)].model_copy(update={"model": f"model-{i:03d}"})
        for i in range(count)
    ]


async def api_client(aiohttp_client: Any, store: DecisionStore, clock: VirtualClock) -> Client:
    """The API application over `store`, every model served in every namespace."""
    app = build_app(
        store=store,
        metrics=SelfMetrics(),
        health=Health(),
        authenticator=Authenticator(allow_anonymous=True),
        clock=clock,
    )
    client: Client = await aiohttp_client(app)
    return client


class SlowDecide:
    """decide_each whose every model takes STEP_SECONDS of CPU (a spin, which holds the
    thread it runs on): over 300 models a tick decides for about 1.5 s, far longer than a
    request served between two models takes even on a loaded machine. Deciding in one
    stretch on the event loop would answer the request after the tick, and fail the test."""

    STEP_SECONDS = 0.005

    def __init__(self) -> None:
        self.steps = 0
        self._real = decide_each

    def __call__(self, *args: Any) -> Iterator[Any]:
        for step in self._real(*args):
            done = time.perf_counter() + self.STEP_SECONDS
            while time.perf_counter() < done:
                pass
            self.steps += 1
            yield step


async def test_the_api_answers_while_a_slow_decide_runs(
    policies: list[ModelPolicy],
    source: FakeSource,
    clock: VirtualClock,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request made while a tick is deciding is answered before the tick ends, with the
    previous tick's value; once the tick ends, the new one is served."""
    loop, store = adapter(fleet_of(policies, 300), source, clock)
    await loop.tick()  # the first tick: every model idle
    client = await api_client(aiohttp_client, store, clock)
    url = f"{PATH}?labelSelector=model%3Dmodel-001"
    first = (await (await client.get(url)).json())["items"][0]

    slow = SlowDecide()
    monkeypatch.setattr("scaler.live.loop.decide_each", slow)
    clock.advance(5)
    source.set("model-001", queue_depth=40.0)
    tick = asyncio.create_task(loop.tick())
    while slow.steps == 0:
        await asyncio.sleep(0.001)
    response = await asyncio.wait_for(client.get(url), timeout=GENEROUS)
    assert response.status == 200
    assert (await response.json())["items"][0] == first
    assert not tick.done()  # answered while the tick was still deciding
    assert slow.steps < 300

    result = await asyncio.wait_for(tick, timeout=GENEROUS)
    item = (await (await client.get(url)).json())["items"][0]
    assert item["value"] == str(result.decisions["model-001"].desired_replicas)
    assert item["timestamp"] != first["timestamp"]


async def test_a_list_never_mixes_two_ticks(
    policies: list[ModelPolicy], source: FakeSource, clock: VirtualClock, aiohttp_client: Any
) -> None:
    """While ticks over 300 models run, every all-models answer carries one tick's time."""
    loop, store = adapter(fleet_of(policies, 300), source, clock)
    await loop.tick()
    client = await api_client(aiohttp_client, store, clock)
    seen: set[str] = set()
    ticking = True

    async def read_while_ticking() -> None:
        while ticking:
            response = await client.get(PATH)
            assert response.status == 200
            stamps = {item["timestamp"] for item in (await response.json())["items"]}
            assert len(stamps) == 1, stamps
            seen.update(stamps)

    reader = asyncio.create_task(read_while_ticking())
    for _ in range(4):
        clock.advance(5)
        await asyncio.wait_for(loop.tick(), timeout=GENEROUS)
        await asyncio.sleep(0.01)  # let the reader see this tick before the next
    ticking = False
    await asyncio.wait_for(reader, timeout=GENEROUS)
    assert len(seen) >= 3  # the reader did run across ticks


class PublishingMetrics(NoMetrics):
    """Self-metrics that say when the loop starts publishing a tick's decisions."""

    def __init__(self) -> None:
        self.publishing = asyncio.Event()

    def observe_decision(self, decision: Decision, policy: ModelPolicy) -> None:
        """Flag the start of publishing (called on the event loop)."""
        self.publishing.set()


async def test_the_api_answers_between_publish_slices(
    policies: list[ModelPolicy],
    source: FakeSource,
    clock: VirtualClock,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a tick publishes (one model per slice here), a request is answered, from the
    previous tick: the draft being written is not visible."""
    monkeypatch.setattr("scaler.live.loop.SLICE_SECONDS", 0.0)
    metrics = PublishingMetrics()
    loop, store = adapter(fleet_of(policies, 300), source, clock, metrics)
    await loop.tick()
    client = await api_client(aiohttp_client, store, clock)
    url = f"{PATH}?labelSelector=model%3Dmodel-299"
    before = (await (await client.get(url)).json())["items"][0]["timestamp"]

    metrics.publishing.clear()
    clock.advance(5)
    tick = asyncio.create_task(loop.tick())
    await asyncio.wait_for(metrics.publishing.wait(), timeout=GENEROUS)
    response = await asyncio.wait_for(client.get(url), timeout=GENEROUS)
    assert (await response.json())["items"][0]["timestamp"] == before
    assert not tick.done()
    await asyncio.wait_for(tick, timeout=GENEROUS)
    assert (await (await client.get(url)).json())["items"][0]["timestamp"] != before


async def test_run_gives_the_interpreter_back_as_it_found_it(
    policies: list[ModelPolicy], source: FakeSource, clock: VirtualClock
) -> None:
    """run() switches threads faster, freezes the long-lived heap and makes the collector's
    passes small while it runs only."""
    loop, _ = adapter(policies, source, clock)
    switch_interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(interval=0.01, stop=stop))

    async def first_tick_done() -> None:
        while gc.get_freeze_count() == 0:  # frozen after the first tick
            await asyncio.sleep(0.01)

    await asyncio.wait_for(first_tick_done(), timeout=GENEROUS)
    assert sys.getswitchinterval() < switch_interval
    assert gc.get_threshold() == GC_THRESHOLDS != thresholds
    stop.set()
    await asyncio.wait_for(running, timeout=GENEROUS)
    assert (sys.getswitchinterval(), gc.get_freeze_count()) == (switch_interval, 0)
    assert gc.get_threshold() == thresholds
