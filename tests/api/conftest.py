"""Fixtures for the API tests: a decision builder, an app wired to a fake clock, TLS material."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from scaler.api.auth import Authenticator
from scaler.api.selfmetrics import Health, SelfMetrics
from scaler.api.server import build_app
from scaler.api.store import DecisionStore
from scaler.core import Decision, Reason, Signal

MODELS = ("tinyllama", "mistral-7b", "deepseek-coder", "mixtral-8x7b")
NAMESPACES = dict.fromkeys(MODELS, "cortex")
START = 1_790_000_000.0
STALENESS = 60.0


def make_decision(
    model: str = "mistral-7b",
    *,
    time: float = START,
    desired: int = 2,
    current: int = 2,
    signals: Mapping[Signal, float] | None = None,
    demand: int | None = 2,
    reasons: tuple[Reason, ...] = (Reason.DEMAND,),
) -> Decision:
    """A decision with defaults; `demand=None` means it was made without data."""
    values = (
        {Signal.QUEUE_DEPTH: 1.5, Signal.TOKENS_PER_SECOND: 120.0} if signals is None else signals
    )
    return Decision(
        model=model,
        time=time,
        desired_replicas=desired,
        current_replicas=current,
        ready_replicas=current,
        starting_replicas=0,
        signals=values,
        demands=dict.fromkeys(values, 1),
        demand=demand,
        placement_cap=None,
        reasons=reasons,
    )


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Wiring:
    """Everything build_app receives, kept for the test to poke."""

    store: DecisionStore = field(
        default_factory=lambda: DecisionStore(MODELS, staleness_seconds=STALENESS)
    )
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    health: Health = field(default_factory=Health)
    clock: FakeClock = field(default_factory=FakeClock)
    authenticator: Authenticator = field(
        default_factory=lambda: Authenticator(allow_anonymous=True)
    )

    def app(self, namespaces: Mapping[str, str] | None = NAMESPACES) -> web.Application:
        """The application over this wiring."""
        return build_app(
            store=self.store,
            metrics=self.metrics,
            health=self.health,
            authenticator=self.authenticator,
            clock=self.clock,
            namespaces=namespaces,
        )


@pytest.fixture
def wiring() -> Wiring:
    """A store with the four homelab models, none published yet, and an anonymous-ok app."""
    return Wiring()
