"""The fast positional builders of Decision and ModelState build what the constructors do."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from scaler.core import Decision, ModelState, Reason, Signal
from scaler.core.sizing import ServiceEstimate, Sizing
from scaler.core.types import build_decision, build_state

DECISION: dict[str, Any] = {
    "model": "mistral-7b",
    "time": 12.5,
    "desired_replicas": 3,
    "current_replicas": 2,
    "ready_replicas": 1,
    "starting_replicas": 1,
    "signals": {Signal.QUEUE_DEPTH: 4.0},
    "demands": {Signal.QUEUE_DEPTH: 2},
    "demand": 2,
    "placement_cap": 6,
    "reasons": (Reason.SLO_SIZED, Reason.STEP_LIMITED),
    "sizing": Sizing(3, 0.2, 45.0, 9.0, 0.001),
    "keep_alive_s": 30.0,
}
STATE: dict[str, Any] = {
    "recommendations": ((5.0, 2),),
    "demand_history": ((0.0, 1.5), (5.0, 2.5)),
    "last_active": 5.0,
    "idle_since": None,
    "consecutive_failures": 1,
    "starting_since": 0.0,
    "last_desired": 3,
    "scale_changes": ((5.0, 1),),
    "observed_replicas": 2,
    "service": ServiceEstimate(rate=0.2, busy=1.0, weight=0.5, updated=5.0),
    "idle_gaps": (40.0,),
    "release_gaps": (90.0, 120.0),
    "released_at": None,
}


@pytest.mark.parametrize(
    ("cls", "build", "values"),
    [(Decision, build_decision, DECISION), (ModelState, build_state, STATE)],
    ids=["Decision", "ModelState"],
)
def test_builder_makes_what_the_constructor_makes(
    cls: type[Any], build: Any, values: dict[str, Any]
) -> None:
    """Same type, same fields (every one, in order), equal, still frozen, and it pickles and
    copies as the constructor's object does."""
    assert [f.name for f in dataclasses.fields(cls)] == list(values)
    built = build(*values.values())
    assert type(built) is cls
    assert built == cls(**values)
    assert repr(built) == repr(cls(**values))
    for name, value in values.items():
        assert getattr(built, name) is value
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, next(iter(values)), None)
    with pytest.raises(TypeError):
        build(*list(values.values())[:-1])  # every field must be given
    # Built through a class of the same layout: nothing of that class is left on it.
    assert pickle.loads(pickle.dumps(built)) == built
    assert copy.copy(built) == built
    assert dataclasses.replace(built) == built
    assert not hasattr(built, "__dict__")
