"""scaler itself as a policy under comparison: the real decision core driving an emulated HPA.

This is the production path, step for step:

1. every `interval` (5 s, the control loop's tick) the real ``scaler.core.decide_all`` runs on
   what Prometheus shows (`ModelView.observation`) and the cluster's pods, with each model's
   `ModelState` carried from tick to tick exactly as the live loop persists it;
2. each decision's desired replicas is what the external metrics API serves as
   ``scaler-desired-replicas``;
3. each model's HPA (emulated by `HpaEmulator`, syncing every 15 s) reads that metric with
   an ``AverageValue`` target of 1 (1000 milli), so it follows the decision; its behavior
   lets the policy lead (no stabilization of its own, scale-down 100 % per 15 s, the default
   scale-up rate) since scaler already stabilizes and limits steps, as the shipped
   manifests configure it;
4. on-demand models: the HPA cannot leave 0 (ScalingDisabled) and its ``minReplicas`` is 1,
   so scaler's actuator (``scaler.live.actuator.needs_write``) writes ``spec.replicas`` 0 -> N
   (the decision) when the decision wakes the model and N -> 0 when it decides zero; the HPA
   follows the decision from there.

Requests that arrive at zero replicas are held by scaler's activator (engine: holds), which
also writes ``spec.replicas`` 0 -> 1 the moment it holds one (``--scale-on-wake``, on in the
shipped manifests; at most once per `WAKE_INTERVAL_SECONDS` per model, as
``scaler.activator.wake`` does), so a wake-up does not wait for a scrape and a tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scaler.core import Decision, ModelPolicy, ModelState, decide_all
from scaler.simulation.autoscaler import ClusterView
from scaler.simulation.hpa import (
    HpaBehavior,
    HpaEmulator,
    HpaPolicy,
    HpaSpec,
    MetricTarget,
    PartialScalingRules,
)

WAKE_INTERVAL_SECONDS = 30.0
"""The activator patches a model from zero at most this often (scaler.activator.wake)."""

TARGET_MILLI = 1000
"""``AverageValue: 1`` on ``scaler-desired-replicas``: one replica per unit of the metric."""

LEAD_FOLLOWING_BEHAVIOR = HpaBehavior.defaulted(
    scale_up=PartialScalingRules(stabilization_window_seconds=0),
    scale_down=PartialScalingRules(
        stabilization_window_seconds=0, policies=(HpaPolicy("Percent", 100, 15),)
    ),
)
"""The HPA behavior that lets scaler's decision lead (it stabilizes and limits steps itself)."""


def scaler_hpa_spec(policy: ModelPolicy) -> HpaSpec:
    """The HPA shipped for `policy`'s model: follows ``scaler-desired-replicas`` exactly."""
    return HpaSpec(
        max_replicas=policy.replicas.max,
        metrics=(MetricTarget("AverageValue", TARGET_MILLI),),
        min_replicas=max(1, policy.replicas.min),
        behavior=LEAD_FOLLOWING_BEHAVIOR,
    )


class ScalerPolicy:
    """The ``scaler`` autoscaler: decide_all every tick, an emulated HPA per model."""

    name = "scaler"

    def __init__(
        self,
        policies: Iterable[ModelPolicy],
        *,
        interval: float = 5.0,
        keep_decisions: bool = True,
    ) -> None:
        self.interval = interval
        self.policies = tuple(policies)
        self.states: dict[str, ModelState] = {}
        self.decisions: list[Decision] = []  # every decision, for reports and export
        self._keep = keep_decisions
        self._hpas = {p.model: HpaEmulator(scaler_hpa_spec(p)) for p in self.policies}
        self._served: dict[str, int] = {}  # scaler-desired-replicas as the API serves it
        self._next_sync = 0.0
        self._woken: dict[str, float] = {}  # when the activator last woke each model
        self._on_demand = {p.model for p in self.policies if p.on_demand}

    def wake(self, model: str, now: float, spec_replicas: int) -> int | None:
        """The activator's ``--scale-on-wake``: 0 -> 1 when a request is held at zero."""
        if spec_replicas != 0 or model not in self._on_demand:
            return None
        last = self._woken.get(model)
        if last is not None and now - last < WAKE_INTERVAL_SECONDS:
            return None
        self._woken[model] = now
        return 1

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """One control-loop tick, plus the HPA syncs that fall due at this instant."""
        observations = {name: model.observation for name, model in view.models.items()}
        decisions, self.states = decide_all(
            observations, self.policies, self.states, view.cluster, view.now
        )
        if self._keep:
            self.decisions.extend(decisions.values())
        wanted: dict[str, int] = {}
        for policy in self.policies:
            name = policy.model
            desired = decisions[name].desired_replicas
            self._served[name] = desired
            if not policy.on_demand:
                continue
            spec = view.models[name].spec_replicas
            # The actuator's part (as scaler.live.actuator writes it): the HPA can neither
            # leave nor reach zero, so zero crossings are written as decided.
            if desired != spec and (spec == 0 or desired == 0):
                wanted[name] = desired
        if view.now + 1e-9 >= self._next_sync:
            self._next_sync += self._hpas_period()
            for name, hpa in self._hpas.items():
                model = view.models[name]
                spec = wanted.get(name, model.spec_replicas)
                sync = hpa.sync(
                    now=view.now,
                    spec_replicas=spec,
                    status_replicas=spec,
                    ready_pods=model.ready_replicas,
                    usages=[self._served[name] * TARGET_MILLI],
                )
                if sync.rescaled:
                    wanted[name] = sync.desired_replicas
        return wanted

    def _hpas_period(self) -> float:
        return next(iter(self._hpas.values())).spec.sync_period_seconds if self._hpas else 15.0
