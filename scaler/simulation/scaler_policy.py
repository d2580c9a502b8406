"""scaler itself as a policy under comparison: the real decision core driving an emulated HPA.

This is the production path, step for step:

1. every `interval` (5 s, the control loop's tick) the real ``scaler.core.decide_all`` runs on
   what Prometheus shows (`ModelView.observation`) and the cluster's pods, with each model's
   `ModelState` carried from tick to tick exactly as the live loop persists it;
2. each decision's desired replicas is what the external metrics API serves as
   ``scaler-desired-replicas``;
3. each model's HPA (emulated by `HpaEmulator`, syncing every `hpaSyncPeriodSeconds` of the
   scenario, 15 s by default, at the first tick one is due) reads that metric with
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

While the cluster is idle the engine may skip ticks (``FastForwards``): the decision core's
``scaler.core.quiescence`` says until when each model's decision holds and carries its state
through the skipped ticks; the HPA, following a decision equal to the current count, writes
nothing meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from scaler.core import Decision, ModelPolicy, ModelState, decide_all
from scaler.core.quiescence import advance, quiet_until, replay_seconds
from scaler.simulation.autoscaler import ClusterView, IdleStretch
from scaler.simulation.hpa import (
    HpaBehavior,
    HpaEmulator,
    HpaPolicy,
    HpaSpec,
    MetricTarget,
    PartialScalingRules,
)
from scaler.simulation.scenario import PreparedScenario

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


def scaler_hpa_spec(policy: ModelPolicy, sync_period_seconds: float = 15.0) -> HpaSpec:
    """The HPA shipped for `policy`'s model: follows ``scaler-desired-replicas`` exactly,
    synced every `sync_period_seconds` (the cluster's HPA controller period)."""
    return HpaSpec(
        max_replicas=policy.replicas.max,
        metrics=(MetricTarget("AverageValue", TARGET_MILLI),),
        min_replicas=max(1, policy.replicas.min),
        behavior=LEAD_FOLLOWING_BEHAVIOR,
        sync_period_seconds=sync_period_seconds,
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
        hpa_sync_seconds: float = 15.0,
    ) -> None:
        self.interval = interval
        self.policies = tuple(policies)
        self.states: dict[str, ModelState] = {}
        self.decisions: list[Decision] = []  # every decision, for reports and export
        self._keep = keep_decisions
        self._hpas = {
            p.model: HpaEmulator(scaler_hpa_spec(p, hpa_sync_seconds)) for p in self.policies
        }
        self._served: dict[str, int] = {}  # scaler-desired-replicas as the API serves it
        self._next_sync = 0.0
        self._woken: dict[str, float] = {}  # when the activator last woke each model
        self._on_demand = {p.model for p in self.policies if p.on_demand}
        self._last: Mapping[str, Decision] = {}  # the last tick's decisions

    @classmethod
    def for_scenario(
        cls, prepared: PreparedScenario, *, keep_decisions: bool = True
    ) -> ScalerPolicy:
        """scaler on `prepared`'s policies, its HPAs synced on the scenario's period."""
        return cls(
            prepared.policies,
            keep_decisions=keep_decisions,
            hpa_sync_seconds=prepared.scenario.hpa_sync_period_seconds,
        )

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
        self._last = decisions
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

    def skippable_until(self, stretch: IdleStretch) -> float:
        """The time before which ticks may be skipped: every model's decision holds
        (``quiescence.quiet_until``) and equals its count, so its HPA writes nothing; the
        ticks of the windows' length before that run again (``quiescence.replay_seconds``)."""
        view = stretch.view
        until, replay = stretch.until, self._hpas_period() + self.interval
        for policy in self.policies:
            name = policy.model
            decision = self._last.get(name)
            if decision is None or decision.time != view.now:
                return view.now
            if decision.desired_replicas != view.models[name].spec_replicas:
                return view.now
            if not _holds(self._hpas[name], view.models[name].spec_replicas):
                return view.now
            quiet = quiet_until(
                policy,
                decision,
                self.states[name],
                sample_age=stretch.sample_age,
                tick_seconds=self.interval,
            )
            until = min(until, quiet)
            replay = max(replay, replay_seconds(policy, self.interval))
        return until - replay

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """Carry every model's state through `ticks`, and the HPAs' sync times."""
        for policy in self.policies:
            name = policy.model
            self.states[name] = advance(policy, self._last[name], self.states[name], ticks)
        period = self._hpas_period()
        for now in ticks:
            if now + 1e-9 >= self._next_sync:  # as tick() does: the syncs stay on their grid
                self._next_sync += period

    def _hpas_period(self) -> float:
        return next(iter(self._hpas.values())).spec.sync_period_seconds if self._hpas else 15.0


def _holds(hpa: HpaEmulator, spec: int) -> bool:
    """Whether `hpa`, served ``scaler-desired-replicas`` equal to `spec`, changes nothing
    at its syncs: at 0 scaling is disabled; within its bounds the usage per pod is exactly
    the target (ratio 1, inside any tolerance), and with the lead-following behavior (no
    stabilization window) its memory is one recommendation overwritten each sync, which a
    sync after the skip writes as it would have been (its scale events are read only when
    it scales)."""
    if spec == 0:
        return hpa.spec.min_replicas != 0
    behavior = hpa.spec.behavior
    return (
        hpa.spec.min_replicas <= spec <= hpa.spec.max_replicas
        and behavior is not None
        and not behavior.scale_up.stabilization_window_seconds
        and not behavior.scale_down.stabilization_window_seconds
        and bool(hpa.state.recommendations)  # synced once: no initial recommendation to come
    )
