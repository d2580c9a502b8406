"""SourceWithHolds: the loop's reading is the wrapped source's, held requests go to /status's
board, and a failing held query costs the tick nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scaler.api.status import HeldRequests
from scaler.core import ModelPolicy, Signal
from scaler.live.holds import HoldsSource, SourceWithHolds
from scaler.sources import (
    ModelReading,
    PrometheusSource,
    QueryStat,
    ReplicaCount,
    SourceReading,
)
from tests.builders import make_policy

READING = SourceReading(
    models={"mixtral-8x7b": ModelReading({Signal.QUEUE_DEPTH: 2.0}, 100.0)},
    queries=(QueryStat(Signal.QUEUE_DEPTH, make_policy("mixtral-8x7b").engine, 0.01, None),),
)


class FakeSource:
    """Answers signals and replicas; the held query answers `held`, or raises when None."""

    def __init__(self, held: Mapping[str, float] | None) -> None:
        self.held = held

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        return READING

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> Mapping[str, ReplicaCount]:
        return {"mixtral-8x7b": ReplicaCount(current=0, ready=0)}

    async def held_requests(self, policies: Sequence[ModelPolicy]) -> Mapping[str, float]:
        if self.held is None:
            raise ConnectionError("refused")
        return self.held


async def test_held_requests_are_recorded_beside_the_reading() -> None:
    """The reading passes through unchanged; the held counts land on the board at read time."""
    board = HeldRequests()
    source = SourceWithHolds(FakeSource({"mixtral-8x7b": 2.0}), board, clock=lambda: 100.0)
    policies = [make_policy("mixtral-8x7b")]
    assert await source.read(policies) is READING
    assert await source.replica_counts(policies) == {"mixtral-8x7b": ReplicaCount(0, 0)}
    assert board.count("mixtral-8x7b", now=130.0, max_age=60.0) == 2
    assert board.count("tinyllama", now=130.0, max_age=60.0) is None  # no activator series
    assert board.count("mixtral-8x7b", now=161.0, max_age=60.0) is None  # too old


async def test_a_failing_held_query_leaves_the_reading_and_the_last_counts() -> None:
    """The signals still arrive; the board keeps its last good read (aged out later)."""
    board = HeldRequests()
    fake = FakeSource({"mixtral-8x7b": 1.0})
    source = SourceWithHolds(fake, board, clock=lambda: 100.0)
    await source.read([make_policy("mixtral-8x7b")])
    fake.held = None
    assert await source.read([make_policy("mixtral-8x7b")]) is READING
    assert board.count("mixtral-8x7b", now=100.0, max_age=60.0) == 1


def test_the_prometheus_source_reads_held_requests() -> None:
    """PrometheusSource satisfies the protocol serve.py checks before wrapping it."""
    assert isinstance(PrometheusSource(url="http://127.0.0.1:1"), HoldsSource)
    assert not isinstance(object(), HoldsSource)
