"""Values that cross the core's boundary: observations in, decisions and state out.

All times are float seconds on one clock chosen by the driver (Unix time in the live loop,
virtual seconds in the simulator). The core never reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import TypeAlias, TypeVar

from scaler.core.signals import Signal
from scaler.core.sizing import ServiceEstimate, Sizing

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A value that ``json.dumps`` accepts as is."""


class Reason(StrEnum):
    """Why a decision came out as it did; one per step that shaped the number.

    The values double as Kubernetes event reasons and as the `reason` label of the
    `scaler_decisions_total` metric, so they are CamelCase and stable.
    """

    DEMAND = "Demand"  # desired follows the per-signal demand
    SLO_SIZED = "SloSized"  # demand from the queueing model: fewest replicas meeting the SLO
    WITHIN_TOLERANCE = "WithinTolerance"  # demand within tolerance of current: no change
    TREND_PROJECTED = "TrendProjected"  # demand projected cold-start seconds ahead
    COLD_START_HOLD = "ColdStartHold"  # backlog growth ignored while replicas are starting
    COLD_START_OVERDUE = "ColdStartOverdue"  # starting replicas overdue: hold lifted
    SCALE_FROM_ZERO = "ScaleFromZero"  # activation seen at zero replicas
    IDLE_AT_ZERO = "IdleAtZero"  # at zero and nothing to wake for
    SCALE_TO_ZERO = "ScaleToZero"  # idle period passed
    IDLE_PENDING = "IdlePending"  # idle, but the idle period has not passed yet
    STABILIZED_UP = "StabilizedUp"  # scale-up stabilization window held the number down
    STABILIZED_DOWN = "StabilizedDown"  # scale-down stabilization window held the number up
    STEP_LIMITED = "StepLimited"  # change cut to the policy's max step
    PLACEMENT_CAP = "PlacementCap"  # no more replicas fit on the nodes
    BOUNDED_MIN = "BoundedMin"  # raised to replicas.min
    BOUNDED_MAX = "BoundedMax"  # lowered to replicas.max
    NO_DATA = "NoData"  # no signal at all: hold
    STALE_DATA = "StaleData"  # newest sample older than the staleness limit: hold
    PARTIAL_DATA = "PartialData"  # some signals missing: may scale up, never down
    FALLBACK = "Fallback"  # too many ticks without data: the policy's fallback applied


@dataclass(frozen=True, slots=True)
class Observation:
    """What the metrics source knows about one model at one instant.

    `signals` holds the signals that have a value; a signal that is absent is missing (no
    series, query error, NaN), which is different from a measured 0. `sample_time` is the
    newest sample's timestamp, used for staleness; None when the source has no timestamp
    (staleness is then not judged: a source that reads nothing leaves `signals` empty).
    """

    model: str
    signals: Mapping[Signal, float]
    sample_time: float | None
    current_replicas: int  # replicas requested (Deployment spec.replicas)
    ready_replicas: int

    @property
    def starting_replicas(self) -> int:
        """Requested replicas not ready yet: capacity already on its way."""
        starting = self.current_replicas - self.ready_replicas
        return starting if starting > 0 else 0


@dataclass(frozen=True, slots=True)
class Node:
    """A schedulable node and the memory pods may use on it."""

    name: str
    allocatable_gib: float


@dataclass(frozen=True, slots=True)
class Pod:
    """A model replica; `node` is None while it is Pending without a node.

    A `terminating` pod was deleted and is finishing its requests: until it is gone it keeps
    its memory and its place on the node (the scheduler counts it), but it is no longer one
    of the replicas the Deployment counts, so a replacement needs room of its own.
    """

    model: str
    node: str | None
    memory_gib: float
    terminating: bool = False


@dataclass(frozen=True)
class ClusterState:
    """The nodes and the model pods on them, as the placement planner needs them.

    An empty ClusterState (no nodes) means "placement unknown": decide() applies no cap.
    """

    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()

    @cached_property
    def used_gib(self) -> Mapping[str, float]:
        """Memory taken on each node by placed pods (computed once per state)."""
        used = {node.name: 0.0 for node in self.nodes}
        for pod in self.pods:
            if pod.node in used:
                used[pod.node] += pod.memory_gib
        return used

    @cached_property
    def terminating_by_model(self) -> Mapping[str, int]:
        """For each model with terminating pods on a node, how many (computed once)."""
        counts: dict[str, int] = {}
        for pod in self.pods:
            if pod.terminating and pod.node is not None:
                counts[pod.model] = counts.get(pod.model, 0) + 1
        return counts

    @cached_property
    def placed_by_model(self) -> Mapping[str, Mapping[str, int]]:
        """For each model, how many of its pods sit on each node."""
        counts: dict[str, dict[str, int]] = {}
        for pod in self.pods:
            if pod.node is not None:
                per_node = counts.setdefault(pod.model, {})
                per_node[pod.node] = per_node.get(pod.node, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class ModelState:
    """What decide() remembers about one model between ticks.

    Everything here survives a restart (the live loop persists it in an annotation), so a new
    leader neither scales an idle model down early nor repeats a scale-up.
    """

    # (time, recommendation) pairs inside the longest stabilization window.
    recommendations: tuple[tuple[float, int], ...] = ()
    # (time, demand in replicas) pairs inside the trend window, for the cold-start projection.
    demand_history: tuple[tuple[float, float], ...] = ()
    last_active: float | None = None
    # Start of the current unbroken run of observed idleness; a data gap resets it.
    idle_since: float | None = None
    consecutive_failures: int = 0
    # When replicas were first seen starting in the current cold start.
    starting_since: float | None = None
    last_desired: int | None = None
    # (time, change in observed replicas) inside the longest step-limit period.
    scale_changes: tuple[tuple[float, int], ...] = ()
    # The current replica count seen on the previous tick (to notice changes).
    observed_replicas: int | None = None
    # The online service-time estimate (policies with a sizing section).
    service: ServiceEstimate = field(default_factory=ServiceEstimate)
    # Recent idle gaps (idle start to the next activity), for the on-demand keep-alive.
    idle_gaps: tuple[float, ...] = ()
    # Recent gaps from a scale-down to the next scale-up (a released replica needed again),
    # and when the scale-down still waiting for one happened: the learned scale-down hold.
    release_gaps: tuple[float, ...] = ()
    released_at: float | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """A JSON-ready dict (for the Deployment annotation and the simulator's state dumps)."""
        return {
            "recommendations": [[t, r] for t, r in self.recommendations],
            "demandHistory": [[t, d] for t, d in self.demand_history],
            "lastActive": self.last_active,
            "idleSince": self.idle_since,
            "consecutiveFailures": self.consecutive_failures,
            "startingSince": self.starting_since,
            "lastDesired": self.last_desired,
            "scaleChanges": [[t, d] for t, d in self.scale_changes],
            "observedReplicas": self.observed_replicas,
            "idleGaps": list(self.idle_gaps),
            "releaseGaps": list(self.release_gaps),
            "releasedAt": self.released_at,
            "service": {
                "rate": self.service.rate,
                "busy": self.service.busy,
                "weight": self.service.weight,
                "level": self.service.level,
                "levelWeight": self.service.level_weight,
                "updated": self.service.updated,
                "countRate": self.service.count_rate,
                "countSq": self.service.count_sq,
                "countWeight": self.service.count_weight,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ModelState:
        """Rebuild a state from ``to_json`` output; raises ValueError on a malformed document."""
        try:
            return cls(
                recommendations=tuple(
                    (_number(t), int(_number(r)))
                    for t, r in _pairs(data.get("recommendations", []))
                ),
                demand_history=tuple(
                    (_number(t), _number(d)) for t, d in _pairs(data.get("demandHistory", []))
                ),
                last_active=_opt_float(data.get("lastActive")),
                idle_since=_opt_float(data.get("idleSince")),
                consecutive_failures=int(_number(data.get("consecutiveFailures", 0))),
                starting_since=_opt_float(data.get("startingSince")),
                scale_changes=tuple(
                    (_number(t), int(_number(d))) for t, d in _pairs(data.get("scaleChanges", []))
                ),
                observed_replicas=(
                    None
                    if data.get("observedReplicas") is None
                    else int(_number(data["observedReplicas"]))
                ),
                last_desired=(
                    None if data.get("lastDesired") is None else int(_number(data["lastDesired"]))
                ),
                service=_service(data.get("service")),
                idle_gaps=_gaps(data.get("idleGaps", [])),
                release_gaps=_gaps(data.get("releaseGaps", [])),
                released_at=_opt_float(data.get("releasedAt")),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed model state: {exc}") from None


def _service(value: object) -> ServiceEstimate:
    # Absent in states written before sizing existed: start the estimate afresh.
    if value is None:
        return ServiceEstimate()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping for service, got {value!r}")
    rate, busy = _number(value.get("rate", 0.0)), _number(value.get("busy", 0.0))
    weight = _number(value.get("weight", 0.0))
    level, level_weight = _number(value.get("level", 0.0)), _number(value.get("levelWeight", 0.0))
    # A state written before the dispersion had its own horizon has a countSq over the
    # service horizon and no countRate: the dispersion starts afresh (Poisson until 30
    # requests), the service estimate carries on.
    if "countRate" in value:
        count_rate = _number(value.get("countRate", 0.0))
        count_sq = _number(value.get("countSq", 0.0))
        count_weight = _number(value.get("countWeight", 0.0))
    else:
        count_rate = count_sq = count_weight = 0.0
    if min(rate, busy, level, count_rate, count_sq) < 0 or not (
        0 <= weight <= 1 and 0 <= level_weight <= 1 and 0 <= count_weight <= 1
    ):
        raise ValueError(f"service estimate out of range: {value!r}")
    return ServiceEstimate(
        rate=rate,
        busy=busy,
        weight=weight,
        level=level,
        level_weight=level_weight,
        updated=_opt_float(value.get("updated")),
        count_rate=count_rate,
        count_sq=count_sq,
        count_weight=count_weight,
    )


def _gaps(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of gaps, got {value!r}")
    gaps = tuple(_number(g) for g in value)
    if any(g < 0 for g in gaps):
        raise ValueError(f"negative gap in {value!r}")
    return gaps


def _pairs(value: object) -> list[tuple[object, object]]:
    if not isinstance(value, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        raise ValueError(f"expected a list of pairs, got {value!r}")
    return [(p[0], p[1]) for p in value]


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _opt_float(value: object) -> float | None:
    return None if value is None else _number(value)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one decide() call for one model, with everything that explains it.

    The same record feeds the external metrics API, the structured log, /debug/decisions,
    Kubernetes events and the simulator's report.
    """

    model: str
    time: float
    desired_replicas: int
    current_replicas: int
    ready_replicas: int
    starting_replicas: int
    signals: Mapping[Signal, float]
    demands: Mapping[Signal, int]  # per-signal raw demand in replicas
    demand: int | None  # max over signals (after projection); None without data
    placement_cap: int | None  # most replicas that fit; None when placement is unknown
    reasons: tuple[Reason, ...] = field(default=())
    sizing: Sizing | None = None  # the queueing model's view (policies with sizing)
    keep_alive_s: float | None = None  # idle time before zero now (on-demand models)

    @property
    def changed(self) -> bool:
        """Whether the decision asks for a different replica count than is running."""
        return self.desired_replicas != self.current_replicas

    def to_json(self) -> dict[str, JsonValue]:
        """A JSON-ready dict; signal and reason names are their string values."""
        wait = None if self.sizing is None else self.sizing.predicted_wait_s
        return {
            "model": self.model,
            "time": self.time,
            "desiredReplicas": self.desired_replicas,
            "currentReplicas": self.current_replicas,
            "readyReplicas": self.ready_replicas,
            "startingReplicas": self.starting_replicas,
            "signals": {s.value: v for s, v in self.signals.items()},
            "demands": {s.value: d for s, d in self.demands.items()},
            "demand": self.demand,
            "placementCap": self.placement_cap,
            "reasons": [r.value for r in self.reasons],
            "keepAliveSeconds": self.keep_alive_s,
            "sizing": None
            if self.sizing is None
            else {
                "replicas": self.sizing.replicas,
                "arrivalRate": self.sizing.arrival_rate,
                "serviceSeconds": self.sizing.service_seconds,
                "load": self.sizing.load,
                # JSON has no infinity: an overloaded prediction is null.
                "predictedWaitSeconds": wait if wait is not None and math.isfinite(wait) else None,
                "predictedMissRatio": self.sizing.predicted_miss,
                "arrivalDispersion": self.sizing.dispersion,
            },
        }


_Frozen = TypeVar("_Frozen")


def _positional_builder(cls: type[_Frozen]) -> Callable[..., _Frozen]:
    """``cls(*values)`` for a frozen slots dataclass, every field given in order, in about
    a quarter of the time.

    A frozen dataclass's generated __init__ sets each field through ``object.__setattr__``,
    a method lookup and a call per field; decide() builds a Decision and a ModelState per
    model per tick (26,000 fields in a 1,000-model tick). The builder fills an instance of
    a plain class with the same slots instead, one attribute store per field (what a
    mutable class's __init__ does), then gives it `cls` as its class: Python allows
    ``__class__`` assignment between classes of the same layout (same base, same slots in
    the same order), and the object is then exactly what ``cls(*values)`` makes. The
    function is generated the way dataclasses generates __init__: straight-line code, one
    statement per field. tests/core/test_types.py checks that it builds what the
    constructor builds.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    # The frozen class's layout, without its __setattr__ (which refuses every store).
    mutable = type(f"_Mutable{cls.__name__}", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    source = "\n".join(
        [
            f"def build({', '.join(names)}):",
            "    self = new(mutable)",
            *(f"    self.{name} = {name}" for name in names),
            "    self.__class__ = cls",
            "    return self",
        ]
    )
    namespace: dict[str, object] = {"new": object.__new__, "mutable": mutable, "cls": cls}
    exec(source, namespace)
    build = namespace["build"]
    assert callable(build)
    return build


build_decision = _positional_builder(Decision)
"""``Decision(*fields)``, every field in declaration order (decide()'s hot path)."""

build_state = _positional_builder(ModelState)
"""``ModelState(*fields)``, every field in declaration order (decide()'s hot path)."""
