"""The loop's metrics source, also reading the activator's held requests for /status.

/status shows per model the requests the activator holds. The decision's queue depth
already includes them (``scaler.sources.templates``), but summed with the engine's queue, so
they cannot be told apart there; one more query per tick reads the activator's own gauge.
Wrapping the source (rather than adding a step to the loop) keeps the loop's tick as it is:
the held count is read concurrently with the signals, inside the same read deadline, and a
failure of that one query never costs the tick its signals (the count is then unknown,
shown as null, once the last good read is older than the staleness limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import structlog

from scaler.api.status import HeldRequests
from scaler.core import ModelPolicy
from scaler.sources import ReplicaCount, SourceReading

_log = structlog.get_logger("scaler.live.holds")


@runtime_checkable
class HoldsSource(Protocol):
    """A metrics source that can also read held requests (scaler.sources.PrometheusSource)."""

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """Every model's signals."""

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        """Replica counts from Prometheus."""

    async def held_requests(self, policies: Sequence[ModelPolicy]) -> Mapping[str, float]:
        """Requests the activator holds per model."""


class SourceWithHolds:
    """A MetricsSource for the control loop that records held requests on the side."""

    def __init__(
        self, source: HoldsSource, held: HeldRequests, *, clock: Callable[[], float]
    ) -> None:
        self._source = source
        self._held = held
        self._clock = clock
        self._failing = False

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """The signals, as the wrapped source reads them; held requests recorded meanwhile."""
        reading, _ = await asyncio.gather(self._source.read(policies), self._read_holds(policies))
        return reading

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        """The wrapped source's replica counts (--no-kubernetes)."""
        return await self._source.replica_counts(policies)

    async def _read_holds(self, policies: Sequence[ModelPolicy]) -> None:
        read_at = self._clock()
        try:
            counts = await self._source.held_requests(policies)
        except Exception as exc:  # never the tick's problem: /status shows null after a while
            # Once per outage: the signal queries fail too then, and the loop warns for those.
            (_log.debug if self._failing else _log.warning)(
                "held_requests_unavailable", error=f"{type(exc).__name__}: {exc}"
            )
            self._failing = True
            return
        self._failing = False
        self._held.record(counts, read_at)
