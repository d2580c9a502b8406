"""The pure decision core: types, decide() and the placement planner.

Imports nothing from the rest of scaler and nothing that does I/O or reads a clock; a test
(tests/test_architecture.py) enforces it.
"""

from scaler.core.decide import decide, decide_all, decide_each
from scaler.core.placement import Occupancy, capacity, spread
from scaler.core.policy import Engine, FallbackMode, ModelClass, ModelPolicy
from scaler.core.signals import Signal
from scaler.core.types import (
    ClusterState,
    Decision,
    JsonValue,
    ModelState,
    Node,
    Observation,
    Pod,
    Reason,
)

__all__ = [
    "ClusterState",
    "Decision",
    "Engine",
    "FallbackMode",
    "JsonValue",
    "ModelClass",
    "ModelPolicy",
    "ModelState",
    "Node",
    "Observation",
    "Occupancy",
    "Pod",
    "Reason",
    "Signal",
    "capacity",
    "decide",
    "decide_all",
    "decide_each",
    "spread",
]
