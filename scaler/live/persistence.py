"""Model state that survives a restart: ModelState JSON in an annotation on the target Deployment.

What decide() remembers between ticks (idle timers, cold starts under way, the stabilization
history) lives in memory; a restarted adapter, or a new leader, would otherwise start blank
and could scale Mixtral down early or request a replica that is already starting. So the
leader writes ``ModelState.to_json()`` into the annotation `STATE_ANNOTATION` of each
model's Deployment, and every replica reads it at start and when it becomes leader.

How it is written: a JSON merge patch of ``metadata.annotations`` only, without a
resourceVersion precondition. The annotation has one writer, the lease holder, and a
precondition would fail on every status update the Deployment controller makes (each one
bumps the resourceVersion), turning every write into a 409. At most one write per model per
tick, and only when the state changed: at once when a milestone changed (idle timer started
or broken, cold start began or ended, desired replicas, data failures starting or ending),
otherwise at most every `checkpoint_seconds` (30 s), which keeps the stabilization history
close enough without writing the Deployment every 5 s.

When the annotation is missing or corrupt, the model starts from a fresh ``ModelState()``:
decide() treats a fresh state like the HPA's first sync (the running count stands as a
recommendation, so the down window counts from the restart) and restarts the idle period, so
a restart without state never scales down early.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

import structlog

from scaler.core import ModelState

STATE_ANNOTATION: Final = "scaler.dev/state"
"""The Deployment annotation holding the model's ModelState JSON (contract)."""

CHECKPOINT_SECONDS: Final = 30.0

_log = structlog.get_logger("scaler.live.persistence")


def encode_state(state: ModelState) -> str:
    """The annotation value for `state`: compact JSON of ``ModelState.to_json()``."""
    return json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)


def decode_state(annotations: Mapping[str, str], *, model: str) -> ModelState:
    """The saved state in `annotations`, or a fresh ModelState (logged) when absent or corrupt."""
    raw = annotations.get(STATE_ANNOTATION)
    if raw is None:
        return ModelState()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return ModelState.from_json(data)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _log.warning(
            "state_annotation_corrupt",
            model=model,
            annotation=STATE_ANNOTATION,
            error=str(exc),
            action="starting from a fresh state",
        )
        return ModelState()


def _milestones(state: ModelState) -> tuple[object, ...]:
    """The parts of a state whose change must reach the annotation at once."""
    return (
        state.idle_since,
        state.starting_since,
        state.last_desired,
        state.consecutive_failures > 0,
    )


@dataclass(frozen=True, slots=True)
class _Written:
    state: ModelState
    time: float


class StateCheckpoints:
    """Decides when a model's state is due to be written; remembers what was written."""

    def __init__(self, *, checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        self._every = checkpoint_seconds
        self._written: dict[str, _Written] = {}

    def loaded(self, model: str, state: ModelState, now: float) -> None:
        """Record `state` as what the annotation holds (read at start or on leadership)."""
        self._written[model] = _Written(state, now)

    def due(self, model: str, state: ModelState, now: float) -> bool:
        """Whether `state` should be written now."""
        last = self._written.get(model)
        if last is None:
            return True
        if state == last.state:
            return False
        return _milestones(state) != _milestones(last.state) or now - last.time >= self._every

    def written(self, model: str, state: ModelState, now: float) -> None:
        """Record a successful write."""
        self._written[model] = _Written(replace(state), now)
