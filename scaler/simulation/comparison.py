"""The policies ``scaler simulate`` can compare, by name, and how each is built."""

from __future__ import annotations

from collections.abc import Iterable

from scaler.simulation.autoscaler import Autoscaler
from scaler.simulation.baselines import (
    HpaBaseline,
    HpaWarmBaseline,
    KedaBaseline,
    KedaHttpBaseline,
    KpaBaseline,
)
from scaler.simulation.oracle import Oracle
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.scenario import PreparedScenario

POLICY_NAMES = ("scaler", "hpa", "hpa-warm", "keda", "keda-http", "kpa", "oracle")
"""Every comparable policy, in the order reports list them."""


def policy_names(values: Iterable[str]) -> list[str]:
    """Names from repeated and/or comma-separated values, in canonical order; all when empty.

    Raises ValueError naming an unknown policy.
    """
    wanted: set[str] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in POLICY_NAMES:
                raise ValueError(
                    f"unknown policy {name!r}; expected one of: {', '.join(POLICY_NAMES)}"
                )
            wanted.add(name)
    return [n for n in POLICY_NAMES if n in wanted] if wanted else list(POLICY_NAMES)


def make_autoscaler(name: str, prepared: PreparedScenario) -> Autoscaler:
    """A fresh autoscaler `name` for `prepared` (each run needs its own state)."""
    policies = list(prepared.policies)
    # Every HPA of the run syncs on the cluster's period (a kube-controller-manager flag).
    sync = prepared.scenario.hpa_sync_period_seconds
    if name == "scaler":
        return ScalerPolicy.for_scenario(prepared)
    if name == "hpa":
        return HpaBaseline(policies, interval=sync)
    if name == "hpa-warm":
        return HpaWarmBaseline(policies, interval=sync)
    if name == "keda":
        return KedaBaseline(policies, interval=sync)
    if name == "keda-http":
        return KedaHttpBaseline(policies, interval=sync)
    if name == "kpa":
        return KpaBaseline(policies)
    if name == "oracle":
        return Oracle(prepared)
    raise ValueError(f"unknown policy {name!r}; expected one of: {', '.join(POLICY_NAMES)}")
