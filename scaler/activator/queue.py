"""Admission per model: straight through while warm, held in a bounded FIFO while cold.

A model is *warm* once it has a ready endpoint and its server answered ``/health`` with 200
(the probe runs once after every cold start, before the first forward). While it is not warm,
requests wait in the model's queue, at most ``capacity`` of them and each at most the route's
hold timeout. When it becomes warm they are released in arrival order, one after the other:
each released request is let go only after the previous one's request headers reached the
model server (or a short dispatch timeout passed), so the server sees them in order and no
burst of connects lands at once. Requests arriving while the queue drains join its tail, so
nobody overtakes a request that waited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from scaler.activator.endpoints import EndpointTracker, HealthProbe
from scaler.activator.metrics import ActivatorMetrics
from scaler.activator.routes import ModelRoute

log = structlog.get_logger("scaler.activator")

WakeHook = Callable[[ModelRoute], None]
"""Called when a request is held for a model with no ready endpoint (e.g. scale it up)."""


class QueueFullError(Exception):
    """The model's hold queue is at capacity."""


class HoldTimeoutError(Exception):
    """No endpoint became ready within the route's hold timeout."""


class StoppingError(Exception):
    """The activator is shutting down: held requests are answered instead of dropped."""


@dataclass(eq=False)
class _Waiter:
    released: asyncio.Future[None]
    arrived: float  # loop time
    dispatched: asyncio.Event = field(default_factory=asyncio.Event)


class Turn:
    """A request's permission to forward. Call ``dispatched()`` once its headers went out."""

    def __init__(self, waiter: _Waiter | None = None, held_s: float = 0.0) -> None:
        self._waiter = waiter
        self.held_s = held_s
        """Seconds spent in the queue (0 when the model was warm)."""

    @property
    def held(self) -> bool:
        """Whether the request waited in the queue."""
        return self._waiter is not None

    def dispatched(self) -> None:
        """Let the next held request go (idempotent)."""
        if self._waiter is not None:
            self._waiter.dispatched.set()


class ModelGate:
    """Admission for one model: see the module docstring for the rules."""

    def __init__(
        self,
        *,
        route: ModelRoute,
        tracker: EndpointTracker,
        probe: HealthProbe,
        metrics: ActivatorMetrics,
        capacity: int,
        wake: WakeHook | None = None,
        probe_interval_s: float = 0.25,
        dispatch_timeout_s: float = 5.0,
    ) -> None:
        self.route = route
        self._tracker = tracker
        self._probe = probe
        self._metrics = metrics
        self._capacity = capacity
        self._wake = wake
        self._probe_interval = probe_interval_s
        self._dispatch_timeout = dispatch_timeout_s
        self._queue: deque[_Waiter] = deque()
        self._warm = False
        self._releaser: asyncio.Task[None] | None = None
        self._closed = False
        tracker.listen(self._ready_changed)

    @property
    def pending(self) -> int:
        """Requests held now."""
        return len(self._queue)

    @property
    def warm(self) -> bool:
        """Whether requests currently go straight through."""
        return self._warm

    async def admit(self) -> Turn:
        """Wait until this request may be forwarded; QueueFullError or HoldTimeoutError otherwise.

        Cancellation (the client went away) removes the request from the queue.
        """
        if self._warm and not self._queue and self._releaser is None:
            return Turn()
        if self._closed:
            raise StoppingError
        if len(self._queue) >= self._capacity:
            raise QueueFullError
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), loop.time())
        self._queue.append(waiter)
        self._gauge()
        if self._tracker.ready(self.route.model) == 0 and self._wake is not None:
            self._wake(self.route)
        self._start_releaser()
        try:
            async with asyncio.timeout(self.route.hold_timeout_s):
                await waiter.released
        except TimeoutError:
            if not (waiter.released.done() and not waiter.released.cancelled()):
                raise HoldTimeoutError from None
            # Released in the same instant the timeout fired: it is this request's turn.
        except BaseException:
            # Leaving without a turn (client gone, shutdown). Cancelled just after its
            # release, it will never dispatch: the releaser must not wait for it.
            waiter.dispatched.set()
            raise
        finally:
            self._remove(waiter)
        held = loop.time() - waiter.arrived
        self._metrics.wait.labels(model=self.route.model).observe(held)
        return Turn(waiter, held)

    def stop_holding(self) -> None:
        """At shutdown: every held request gets StoppingError (a 503 its client can retry
        elsewhere, rather than a dropped connection); nothing is held from now on."""
        self._closed = True
        for waiter in self._queue:
            if not waiter.released.done():
                waiter.released.set_exception(StoppingError())
        self._queue.clear()
        self._gauge()

    async def close(self) -> None:
        """Stop releasing (at shutdown)."""
        self.stop_holding()
        if self._releaser is not None:
            self._releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._releaser

    def _remove(self, waiter: _Waiter) -> None:
        if waiter in self._queue:  # left before its release: timeout or disconnect
            self._queue.remove(waiter)
            self._gauge()
        if waiter.released.done() and not waiter.released.cancelled():
            return
        waiter.released.cancel()

    def _gauge(self) -> None:
        self._metrics.pending.labels(model=self.route.model).set(len(self._queue))

    def _ready_changed(self, model: str, count: int) -> None:
        if model != self.route.model:
            return
        if count == 0:
            if self._warm:
                log.info("model_cold", model=model)
            self._warm = False  # the next endpoint is a new cold start: probe it again
        else:
            self._start_releaser()

    def _start_releaser(self) -> None:
        if (
            not self._closed
            and self._releaser is None
            and self._queue
            and self._tracker.ready(self.route.model) > 0
        ):
            self._releaser = asyncio.create_task(
                self._release(), name=f"release-{self.route.model}"
            )

    async def _release(self) -> None:
        try:
            while self._queue:
                if not self._warm:
                    if self._tracker.ready(self.route.model) == 0:
                        return  # the next ready change starts a new releaser
                    if not await self._probe.healthy(self.route.upstream):
                        await asyncio.sleep(self._probe_interval)
                        continue
                    self._warm = True
                    log.info("model_warm", model=self.route.model, pending=len(self._queue))
                    continue  # re-check the queue: it may have emptied during the probe
                waiter = self._queue.popleft()
                self._gauge()
                if waiter.released.done():
                    continue
                waiter.released.set_result(None)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._dispatch_timeout):
                        await waiter.dispatched.wait()
        finally:
            self._releaser = None
            # A request may have been held after the loop saw an empty queue.
            if self._queue and self._tracker.ready(self.route.model) > 0:
                self._start_releaser()
