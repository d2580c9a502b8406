"""/status: what a homelab's status page (Gatus) and dashboard (Homepage) show of scaler.

One JSON document, answered from memory like every other route: per model its class, a
state, the desired / current / ready / starting replicas, the last decision's reasons, the
data age and the requests the activator holds for it; and an overall status. It carries no
secret and no policy internals beyond the class (targets, windows, SLOs stay in the
policies and on /metrics). Readable without the front-proxy certificate, like /metrics
(``scaler.api.auth.PUBLIC_PATHS``). The document's JSON Schema is `STATUS_SCHEMA`.

A model's state, from its latest decision at the time of the request (first match wins):

``no-data``
    no decision yet, or the last decision made on data is older than the staleness limit
    (the external metrics API answers 503 for it then), or the latest decision was made
    without data (``NoData``, ``StaleData``; with ``Fallback`` too: the fallback is applied
    *because* data is missing);
``unplaceable``
    the placement cap held the count below what the policy asked (``PlacementCap``): no more
    replicas fit on the nodes;
``cold``
    at zero and nothing asks for more (on-demand models between sessions);
``waking``
    replicas are asked for but none is ready yet (a scale-up from zero, a cold start);
``scaling``
    the desired count differs from the requested one, or requested replicas are not ready;
``warm``
    every requested replica is ready and the decision asks for no change.

The overall status: ``down`` before the first successful control tick or when no model has
data; ``degraded`` when some model is ``no-data`` or ``unplaceable``; ``ok`` otherwise
(scaling, waking and cold are normal operation). The HTTP status is 200 in every case, so
Homepage still shows the body: checks read ``status``.

Held requests come from the activator's ``scaler_activator_pending_requests`` gauge, read
from Prometheus by the control loop each tick (`HeldRequests`, fed by
``scaler.live.holds``); null when the activator's series are absent or the last read is
older than the staleness limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from aiohttp import web

from scaler.api.store import DecisionStore
from scaler.core import Decision, JsonValue, Reason

STATUS_PATH: Final = "/status"


class StatusState(StrEnum):
    """What a model is doing, in one word (see the module docstring for the rules)."""

    WARM = "warm"
    SCALING = "scaling"
    WAKING = "waking"
    COLD = "cold"
    UNPLACEABLE = "unplaceable"
    NO_DATA = "no-data"


class OverallStatus(StrEnum):
    """The adapter's status over all models."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


_WITHOUT_DATA: Final = frozenset({Reason.NO_DATA, Reason.STALE_DATA, Reason.FALLBACK})


def model_state(latest: Decision | None, on_data: Decision | None, *, fresh: bool) -> StatusState:
    """The state of a model from its latest decision and its last one made on data; pure.

    `fresh` says whether `on_data` is younger than the staleness limit.
    """
    if latest is None or on_data is None or not fresh or _WITHOUT_DATA & set(latest.reasons):
        return StatusState.NO_DATA
    if Reason.PLACEMENT_CAP in latest.reasons:
        return StatusState.UNPLACEABLE
    desired, current, ready = (
        latest.desired_replicas,
        latest.current_replicas,
        latest.ready_replicas,
    )
    if desired == 0 and current == 0:
        return StatusState.COLD
    if desired > 0 and ready == 0:
        return StatusState.WAKING
    if desired != current or ready < current:
        return StatusState.SCALING
    return StatusState.WARM


def overall_status(states: Mapping[str, StatusState], *, ready: bool) -> OverallStatus:
    """The overall status from every model's state and the adapter's readiness; pure."""
    if not ready or not states or all(s is StatusState.NO_DATA for s in states.values()):
        return OverallStatus.DOWN
    if any(s in (StatusState.NO_DATA, StatusState.UNPLACEABLE) for s in states.values()):
        return OverallStatus.DEGRADED
    return OverallStatus.OK


class HeldRequests:
    """The activator's held requests per model, as the control loop last read them.

    One writer (the loop's source, ``scaler.live.holds``), one reader (/status). A model
    absent from the last read has no activator series (the activator is not running, or not
    scraped): unknown, not zero.
    """

    def __init__(self) -> None:
        self._counts: dict[str, float] = {}
        self._time: float | None = None

    def record(self, counts: Mapping[str, float], read_at: float) -> None:
        """Replace the counts with one successful read at `read_at` (Unix seconds)."""
        self._counts = dict(counts)
        self._time = read_at

    def count(self, model: str, *, now: float, max_age: float) -> int | None:
        """Requests held for `model`, None when unknown or read more than `max_age` ago."""
        if self._time is None or now - self._time > max_age:
            return None
        value = self._counts.get(model)
        return None if value is None else round(value)


_COUNT: Final[dict[str, JsonValue]] = {"type": "integer", "minimum": 0}
_NULLABLE_COUNT: Final[dict[str, JsonValue]] = {"type": ["integer", "null"], "minimum": 0}

STATUS_SCHEMA: Final[dict[str, JsonValue]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "scaler /status",
    "type": "object",
    "additionalProperties": False,
    "required": ["status", "ready", "time", "heldRequests", "states", "models"],
    "properties": {
        "status": {"enum": [s.value for s in OverallStatus]},
        "ready": {"type": "boolean", "description": "a control tick has succeeded"},
        "time": {"type": "string", "format": "date-time"},
        "heldRequests": {
            **_NULLABLE_COUNT,
            "description": "requests the activator holds, over the models with a count",
        },
        "states": {
            "type": "object",
            "description": "how many models are in each state (every state present)",
            "additionalProperties": False,
            "required": [s.value for s in StatusState],
            "properties": {s.value: _COUNT for s in StatusState},
        },
        "models": {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "class",
                    "state",
                    "replicas",
                    "desiredReplicas",
                    "currentReplicas",
                    "readyReplicas",
                    "startingReplicas",
                    "reasons",
                    "decidedAt",
                    "dataAgeSeconds",
                    "heldRequests",
                ],
                "properties": {
                    "class": {"enum": ["always-on", "on-demand"]},
                    "state": {"enum": [s.value for s in StatusState]},
                    "replicas": {
                        "type": "string",
                        "pattern": "^[0-9]+/[0-9]+$",
                        "description": "ready/desired, for one-line displays",
                    },
                    "desiredReplicas": _NULLABLE_COUNT,
                    "currentReplicas": _NULLABLE_COUNT,
                    "readyReplicas": _NULLABLE_COUNT,
                    "startingReplicas": _NULLABLE_COUNT,
                    "reasons": {
                        "type": "array",
                        "items": {"enum": [r.value for r in Reason]},
                    },
                    "decidedAt": {"type": ["string", "null"], "format": "date-time"},
                    "dataAgeSeconds": {"type": ["number", "null"], "minimum": 0},
                    "heldRequests": _NULLABLE_COUNT,
                },
            },
        },
    },
}
"""JSON Schema (draft 2020-12) of the /status document; docs/api.md "Status" documents it."""


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@dataclass(frozen=True, slots=True)
class StatusPage:
    """The /status route: reads the DecisionStore, the held requests and the readiness flag.

    `classes` maps each model to its class (``always-on`` / ``on-demand``); `ready` tells
    whether a control tick has succeeded (``Health.ready``).
    """

    store: DecisionStore
    classes: Mapping[str, str]
    held: HeldRequests
    ready: Callable[[], bool]
    clock: Callable[[], float] = time.time

    def document(self) -> dict[str, JsonValue]:
        """The /status document now (valid against STATUS_SCHEMA)."""
        now = self.clock()
        staleness = self.store.staleness_seconds
        models: dict[str, JsonValue] = {}
        states: dict[str, StatusState] = {}
        held_total: int | None = None
        for model in self.store.models:
            latest = self.store.latest(model)
            on_data = self.store.latest_on_data(model)
            fresh = on_data is not None and now <= on_data.time + staleness
            state = states[model] = model_state(latest, on_data, fresh=fresh)
            held = self.held.count(model, now=now, max_age=staleness)
            if held is not None:
                held_total = (held_total or 0) + held
            models[model] = {
                "class": self.classes.get(model, "always-on"),
                "state": state.value,
                "replicas": (
                    f"{latest.ready_replicas}/{latest.desired_replicas}" if latest else "0/0"
                ),
                "desiredReplicas": latest.desired_replicas if latest else None,
                "currentReplicas": latest.current_replicas if latest else None,
                "readyReplicas": latest.ready_replicas if latest else None,
                "startingReplicas": latest.starting_replicas if latest else None,
                "reasons": [r.value for r in latest.reasons] if latest else [],
                "decidedAt": _rfc3339(latest.time) if latest else None,
                "dataAgeSeconds": (
                    None if on_data is None else round(max(0.0, now - on_data.time), 3)
                ),
                "heldRequests": held,
            }
        counts = {s.value: 0 for s in StatusState}
        for state in states.values():
            counts[state.value] += 1
        return {
            "status": overall_status(states, ready=self.ready()).value,
            "ready": self.ready(),
            "time": _rfc3339(now),
            "heldRequests": held_total,
            "states": dict[str, JsonValue](counts),
            "models": models,
        }

    def endpoint(self, _request: web.Request) -> web.Response:
        """The aiohttp handler (registered by ``scaler.api.server.build_app``)."""
        body = json.dumps(self.document(), separators=(",", ":")).encode()
        return web.Response(body=body, content_type="application/json")
