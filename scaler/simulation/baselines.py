"""The autoscalers scaler is compared against, at their published defaults.

Each is an ``Autoscaler`` (scaler.simulation.autoscaler) built from the same per-model
policies scaler uses: a policy's per-replica targets become the baseline's thresholds or
targets, and its replica bounds the baseline's min/max. Nothing here is tuned to make scaler
look good; where a baseline has a known failure mode (KEDA reading an empty Prometheus answer
as 0) it is reproduced, since that is what the comparison is for.

- ``HpaBaseline`` ("hpa"): a plain HPA on the raw signals.
- ``KedaBaseline`` ("keda"): the KEDA operator with Prometheus triggers, driving its
  generated HPA.
- ``KpaBaseline`` ("kpa"): Knative's KPA with the activator.
- ``HpaWarmBaseline`` ("hpa-warm"): the plain HPA with every on-demand model kept warm at one
  replica (``minReplicas: 1``), what an operator without scale-from-zero would run.
- ``KedaHttpBaseline`` ("keda-http"): KEDA with its HTTP add-on, whose interceptor holds
  requests at zero and counts them, at the add-on's documented defaults.

How each works upstream, its defaults and its sources: docs/baselines.md.

Each also ``FastForwards`` (scaler.simulation.autoscaler): while the cluster is idle it says
until when its ticks change nothing (its HPAs repeat themselves, no cooldown or grace period
runs out) and catches up with the skipped ticks exactly as running them would have.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.core import ModelPolicy, Observation, Signal
from scaler.simulation.autoscaler import ClusterView, IdleStretch
from scaler.simulation.hpa import HpaEmulator, HpaSpec, HpaSync, MetricTarget

_EPSILON = 1e-9  # float slack when comparing virtual times built by repeated addition


def metric_milli(value: float) -> int:
    """A sample as the HPA receives it: ``int64(value*1000)`` milli-units.

    Both prometheus-adapter and KEDA's Prometheus scaler convert with
    ``resource.NewMilliQuantity(int64(v*1000))``, which truncates.
    """
    return int(value * 1000)


def target_milli(target: float) -> int:
    """A per-replica target as an HPA target in milli-units (never 0: API validation)."""
    return max(1, int(target * 1000))


def _value(observation: Observation, signal: Signal) -> float | None:
    value = observation.signals.get(signal)
    if value is None or not math.isfinite(value):
        return None
    return value


def _hpa_for(
    policy: ModelPolicy,
    *,
    sync_period_seconds: float,
    tolerance: float,
    downscale_stabilization_seconds: float,
    targets: Sequence[float] | None = None,
) -> HpaEmulator:
    # One External metric per target (default: per targeted signal), AverageValue = the
    # per-replica target; behavior nil (legacy normalisation), minReplicas at least 1 (no
    # HPAScaleToZero).
    chosen = [t for _, t in policy.targets.items()] if targets is None else targets
    return HpaEmulator(
        HpaSpec(
            max_replicas=policy.replicas.max,
            metrics=tuple(MetricTarget("AverageValue", target_milli(t)) for t in chosen),
            min_replicas=max(1, policy.replicas.min),
            tolerance=tolerance,
            downscale_stabilization_seconds=downscale_stabilization_seconds,
            sync_period_seconds=sync_period_seconds,
        )
    )


def _hpas_repeat(hpas: Mapping[str, HpaEmulator], stretch: IdleStretch) -> float:
    """`stretch.until` if every HPA, fed at its next syncs what it was fed at this tick's
    (an idle stretch changes none of it), repeats itself; else now."""
    view = stretch.view
    for name, hpa in hpas.items():
        if not hpa.repeats(spec_replicas=view.models[name].spec_replicas):
            return view.now
    return stretch.until


def _sync(
    hpa: HpaEmulator, view: ClusterView, model: str, spec: int, usages: Sequence[int | None]
) -> HpaSync:
    # status.replicas: pods exist (Pending or not) as soon as the ReplicaSet creates them.
    return hpa.sync(
        now=view.now,
        spec_replicas=spec,
        status_replicas=spec,
        ready_pods=view.models[model].ready_replicas,
        usages=usages,
    )


class HpaBaseline:
    """A plain Kubernetes HPA per model on the raw signals its policy targets.

    Source: kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go`` and
    ``replica_calculator.go`` (docs/baselines.md, "Kubernetes HPA"), emulated by ``HpaEmulator``.
    Each targeted signal is one External metric served by an adapter from Prometheus, with an
    ``AverageValue`` target equal to the policy's per-replica target, so the HPA wants
    ``ceil(total / target)`` (max over signals), holds on a missing signal, and keeps the
    highest recommendation of the last 300 s before scaling down. ``behavior`` is nil.

    ``minReplicas`` is ``max(1, policy min)``: without ``HPAScaleToZero`` an HPA never leaves
    zero (ScalingDisabled), so an on-demand model that starts at 0 stays at 0, and one that
    starts above 0 never goes below 1.
    """

    name = "hpa"

    def __init__(
        self,
        policies: Sequence[ModelPolicy],
        *,
        interval: float = 15.0,
        tolerance: float = 0.1,
        downscale_stabilization_seconds: float = 300.0,
    ) -> None:
        self.interval = interval
        self._signals = {p.model: tuple(s for s, _ in p.targets.items()) for p in policies}
        self._hpas = {
            p.model: _hpa_for(
                p,
                sync_period_seconds=interval,
                tolerance=tolerance,
                downscale_stabilization_seconds=downscale_stabilization_seconds,
            )
            for p in policies
        }
        self.last_syncs: dict[str, HpaSync] = {}  # the latest sync per model, for reports

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """One HPA sync per model (the engine ticks every sync period)."""
        wanted: dict[str, int] = {}
        for name, hpa in self._hpas.items():
            model = view.models.get(name)
            if model is None:
                continue
            # An absent or NaN series: the adapter answers with no items, an invalid metric.
            usages = [
                None if (v := _value(model.observation, s)) is None else metric_milli(v)
                for s in self._signals[name]
            ]
            sync = _sync(hpa, view, name, model.spec_replicas, usages)
            self.last_syncs[name] = sync
            if sync.rescaled:
                wanted[name] = sync.desired_replicas
        return wanted

    def skippable_until(self, stretch: IdleStretch) -> float:
        """Idle, every HPA is fed what it was fed last: the stretch, if each repeats itself."""
        return _hpas_repeat(self._hpas, stretch)

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """Every tick is a sync of every HPA."""
        for hpa in self._hpas.values():
            hpa.skip_syncs(ticks)


@dataclass
class _ScaledObject:
    """One KEDA ScaledObject: its triggers, bounds and the operator's status."""

    signals: tuple[Signal, ...]
    min_replica_count: int
    activation_threshold: float
    hpa: HpaEmulator
    created: float | None = None
    last_active: float | None = None


class KedaBaseline:
    """KEDA: the operator's 0↔1 decisions plus the HPA it generates for 1↔N.

    Sources: kedacore/keda ``pkg/scaling/scale_handler.go`` (polling, activity),
    ``pkg/scaling/executor/scale_scaledobjects.go`` (0→min, →0 after cooldown),
    ``controllers/keda/hpa.go`` (the generated HPA), ``pkg/scalers/prometheus_scaler.go``
    (``ignoreNullValues``); docs/baselines.md, "KEDA with Prometheus triggers".

    Per model, one Prometheus trigger per targeted signal with ``threshold`` = the per-replica
    target (AverageValue) and ``activationThreshold`` = the policy's scaleToZero threshold
    (0 if unset). Every `polling_interval` the operator reads every trigger: active when any
    value is strictly above its activation threshold (always active with minReplicaCount ≥ 1).
    At 0 replicas and active it patches to ``max(min, 1)`` at once; inactive with minReplicaCount
    0 it patches to 0 once ``lastActiveTime + cooldownPeriod < now`` (or, never active,
    ``creation + initialCooldownPeriod < now``), jumping straight from N. In between, the
    generated HPA (behavior nil, minReplicas ``max(min, 1)``) syncs every `interval`.

    With ``ignoreNullValues`` (the default) an empty answer or NaN reads as 0: an outage of
    Prometheus looks like an idle model, the HPA scales down to its minimum, and the operator
    takes the model to zero after the cooldown (kedacore/keda#965, #3064). This is the
    failure mode scaler avoids by holding on missing data; it is reproduced on purpose.
    With ``ignore_null_values=False`` a missing value is an error instead: the HPA holds, and
    an inactive object with an errored trigger is not scaled in (no fallback configured).
    """

    name = "keda"

    def __init__(
        self,
        policies: Sequence[ModelPolicy],
        *,
        interval: float = 15.0,
        polling_interval: float = 30.0,
        cooldown_period: float = 300.0,
        initial_cooldown_period: float = 0.0,
        ignore_null_values: bool = True,
        tolerance: float = 0.1,
        downscale_stabilization_seconds: float = 300.0,
    ) -> None:
        self.interval = interval
        self.polling_interval = polling_interval
        self.cooldown_period = cooldown_period
        self.initial_cooldown_period = initial_cooldown_period
        self.ignore_null_values = ignore_null_values
        self._objects = {
            p.model: _ScaledObject(
                signals=tuple(s for s, _ in p.targets.items()),
                min_replica_count=p.replicas.min,
                activation_threshold=(
                    p.scale_to_zero.activation_threshold if p.scale_to_zero is not None else 0.0
                ),
                hpa=_hpa_for(
                    p,
                    sync_period_seconds=interval,
                    tolerance=tolerance,
                    downscale_stabilization_seconds=downscale_stabilization_seconds,
                ),
            )
            for p in policies
        }
        self._next_poll: float | None = None

    def last_active(self, model: str) -> float | None:
        """The ScaledObject's ``status.lastActiveTime`` (None: never active)."""
        return self._objects[model].last_active

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """The operator's poll when one is due, then one sync of every generated HPA."""
        wanted: dict[str, int] = {}
        for obj in self._objects.values():
            if obj.created is None:
                obj.created = view.now
        if self._next_poll is None or view.now + _EPSILON >= self._next_poll:
            # A ticker: polls stay on their 30 s grid whatever the HPA's tick.
            self._next_poll = view.now if self._next_poll is None else self._next_poll
            while self._next_poll <= view.now + _EPSILON:
                self._next_poll += self.polling_interval
            for name, obj in self._objects.items():
                if name in view.models:
                    replicas = self._poll(obj, view, name)
                    if replicas is not None:
                        wanted[name] = replicas
        for name, obj in self._objects.items():
            model = view.models.get(name)
            if model is None:
                continue
            values = [self._read(model.observation, s) for s in obj.signals]
            usages = [None if v is None else metric_milli(v) for v in values]
            sync = _sync(obj.hpa, view, name, wanted.get(name, model.spec_replicas), usages)
            if sync.rescaled:
                wanted[name] = sync.desired_replicas
        return wanted

    def skippable_until(self, stretch: IdleStretch) -> float:
        """Until an inactive object's cooldown runs out, if its HPA repeats itself and no
        poll patches (an active object at zero would be woken)."""
        view = stretch.view
        until = _hpas_repeat({n: o.hpa for n, o in self._objects.items()}, stretch)
        for name, obj in self._objects.items():
            current = view.models[name].spec_replicas
            if self._active_at_rest(obj):
                if current == 0:
                    return view.now  # woken at the next poll
                continue
            if current > 0 and obj.min_replica_count == 0:
                if obj.last_active is None:
                    created = obj.created if obj.created is not None else view.now
                    until = min(until, created + self.initial_cooldown_period)
                else:
                    until = min(until, obj.last_active + self.cooldown_period)
        return until

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """The polls of the skipped ticks (an active object's last activity moves on with
        them) and the syncs of every HPA."""
        for now in ticks:
            if self._next_poll is not None and now + _EPSILON >= self._next_poll:
                while self._next_poll <= now + _EPSILON:
                    self._next_poll += self.polling_interval
                for obj in self._objects.values():
                    if self._active_at_rest(obj):
                        obj.last_active = now
        for obj in self._objects.values():
            obj.hpa.skip_syncs(ticks)

    def _active_at_rest(self, obj: _ScaledObject) -> bool:
        """Whether a poll finds `obj` active while every signal reads 0 (never errored)."""
        return obj.min_replica_count >= 1 or obj.activation_threshold < 0.0

    def _read(self, observation: Observation, signal: Signal) -> float | None:
        value = _value(observation, signal)
        if value is None and self.ignore_null_values:
            return 0.0
        return value

    def _poll(self, obj: _ScaledObject, view: ClusterView, name: str) -> int | None:
        """One executor pass (``RequestScale``) for one ScaledObject: the patch, if any."""
        now = view.now
        values = [self._read(view.models[name].observation, s) for s in obj.signals]
        active = obj.min_replica_count >= 1 or any(
            v is not None and v > obj.activation_threshold for v in values
        )
        errored = any(v is None for v in values)
        current = view.models[name].spec_replicas
        if current == 0 and active:
            obj.last_active = now
            return max(obj.min_replica_count, 1)
        if not active and errored:
            # A trigger errored and no fallback is configured: no scale-in.
            return None
        if not active and current > 0 and obj.min_replica_count == 0:
            if obj.last_active is None:
                created = obj.created if obj.created is not None else now
                expired = created + self.initial_cooldown_period < now
            else:
                expired = obj.last_active + self.cooldown_period < now
            return 0 if expired else None
        if not active and current < obj.min_replica_count:
            return obj.min_replica_count
        if active and not errored:
            # An active object with an errored trigger only has its Ready condition unknown.
            obj.last_active = now
        return None


@dataclass
class _Revision:
    """What Knative keeps per revision: concurrency samples and the panic state."""

    min_scale: int
    max_scale: int
    target: float
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    panic_time: float | None = None
    max_panic_pods: int = 0
    inactive_since: float | None = None
    created: bool = False


class KpaBaseline:
    """Knative's KPA with the activator in front of scaled-to-zero revisions.

    Sources: knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` (stable/panic windows,
    rate limits, panic mode), ``pkg/autoscaler/config/config.go`` (defaults),
    ``pkg/reconciler/autoscaling/kpa/scaler.go`` (scale-to-zero grace, bounds);
    docs/baselines.md, "Knative's KPA".

    Every 2 s tick, per model: the in-flight count (as the activator and queue-proxy report
    it, ``ModelView.inflight``) is sampled and stands for the per-second concurrency until the
    next tick. ``target = max(0.01, cc × 0.70)`` where cc is the policy's ``inflightRequests``
    target (100 when unset). Stable and panic values are the means over the last 60 s and
    6 s; ``dS = ceil(stable/target)``, ``dP = ceil(panic/target)``, each clamped to
    ``[floor(ready/2), ceil(1000·ready)]`` with ``ready = max(1, ready pods)``. Panic starts or
    extends while ``dP/ready ≥ 2`` and ends 60 s after the last such tick; in panic the count
    only rises (``max(dS, dP, the highest since panic began)``). A new autoscaler facing more
    than one ready pod starts in panic, so it keeps the current scale.

    On-demand models (min 0): once the decision is 0 (the 60 s stable mean is 0) the revision
    is marked inactive and keeps its pods for the 30 s scale-to-zero grace period, then goes
    to 0; from 0 the activator holds requests and the first one wakes the revision (the next
    tick sees ``inflight > 0``). A new revision starts at the initial scale 1. Bounds are the
    policy's ``replicas.min`` / ``replicas.max`` (min-scale / max-scale annotations).
    """

    name = "kpa"

    def __init__(
        self,
        policies: Sequence[ModelPolicy],
        *,
        interval: float = 2.0,
        target_utilization: float = 0.70,
        default_concurrency_target: float = 100.0,
        stable_window: float = 60.0,
        panic_window_percentage: float = 10.0,
        panic_threshold_percentage: float = 200.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        scale_to_zero_grace_period: float = 30.0,
        initial_scale: int = 1,
    ) -> None:
        self.interval = interval
        self.stable_window = stable_window
        self.panic_window = stable_window * panic_window_percentage / 100.0
        self.panic_threshold = panic_threshold_percentage / 100.0
        self.max_scale_up_rate = max_scale_up_rate
        self.max_scale_down_rate = max_scale_down_rate
        self.scale_to_zero_grace_period = scale_to_zero_grace_period
        self.initial_scale = initial_scale
        self._revisions = {
            p.model: _Revision(
                min_scale=p.replicas.min,
                max_scale=p.replicas.max,
                target=max(
                    0.01,
                    (p.targets.inflight_requests or default_concurrency_target)
                    * target_utilization,
                ),
            )
            for p in policies
        }

    def target(self, model: str) -> float:
        """The concurrency target per pod (container concurrency × utilisation)."""
        return self._revisions[model].target

    def panicking(self, model: str) -> bool:
        """Whether the model's autoscaler is in panic mode."""
        return self._revisions[model].panic_time is not None

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """One decision per model: sample, decide, apply scale-to-zero grace and bounds."""
        wanted: dict[str, int] = {}
        for name, revision in self._revisions.items():
            model = view.models.get(name)
            if model is None:
                continue
            desired = self._scale(
                revision, view.now, model.spec_replicas, model.ready_replicas, model.inflight
            )
            if desired is not None and desired != model.spec_replicas:
                wanted[name] = desired
        return wanted

    def skippable_until(self, stretch: IdleStretch) -> float:
        """While every revision's window holds only zeros and none panics, the decision is
        the count itself (or its floor, at the minimum); an inactive one goes to zero once its
        grace period has passed."""
        view = stretch.view
        until = stretch.until
        for name, rev in self._revisions.items():
            model = view.models[name]
            if rev.panic_time is not None or any(v for _, v in rev.samples):
                return view.now
            ready = max(1, model.ready_replicas)
            # At a stable and panic mean of 0: the scale-down rate's floor (as _decide).
            want = int(
                min(math.floor(ready / self.max_scale_down_rate), self.max_scale_up_rate * ready)
            )
            spec = model.spec_replicas
            if want > 0 or rev.min_scale >= 1 or spec == 0:
                if self._bounded(rev, want) != spec:
                    return view.now
            elif rev.inactive_since is None:
                return view.now
            else:
                grace = rev.inactive_since + self.scale_to_zero_grace_period - 2 * _EPSILON
                until = min(until, grace)
        return until

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """Each skipped tick's sample (0 in flight), and the window's pruning after the last:
        it keeps the samples inside the stable window, as pruning at every tick would."""
        if not ticks:
            return
        cutoff = ticks[-1] - self.stable_window + _EPSILON
        for rev in self._revisions.values():
            kept = [sample for sample in rev.samples if sample[0] > cutoff]
            kept += [(now, 0.0) for now in ticks if now > cutoff]
            rev.samples = deque(kept)

    def _scale(
        self, rev: _Revision, now: float, spec: int, ready_pods: int, inflight: int
    ) -> int | None:
        """The replicas to write now, or None to leave the count alone."""
        if not rev.created:
            rev.created = True
            if ready_pods > 1:
                # A new autoscaler starts in panic at the current scale, for lack of history.
                rev.panic_time = now
                rev.max_panic_pods = ready_pods
            if spec == 0 and self.initial_scale > 0:
                rev.samples.append((now, float(inflight)))
                return self._bounded(rev, self.initial_scale)
        rev.samples.append((now, float(inflight)))
        while rev.samples and rev.samples[0][0] <= now - self.stable_window + _EPSILON:
            rev.samples.popleft()
        want = self._decide(rev, now, ready_pods)
        if want > 0:
            rev.inactive_since = None
            return self._bounded(rev, want)
        if rev.min_scale >= 1 or spec == 0:
            return self._bounded(rev, want)
        # Scale to zero only after the revision has been inactive for the grace period.
        if rev.inactive_since is None:
            rev.inactive_since = now
        if now - rev.inactive_since + _EPSILON >= self.scale_to_zero_grace_period:
            return 0
        return None

    def _decide(self, rev: _Revision, now: float, ready_pods: int) -> int:
        ready = max(1, ready_pods)
        stable = self._mean(rev, now, self.stable_window)
        panic = self._mean(rev, now, self.panic_window)
        max_up = math.ceil(self.max_scale_up_rate * ready)
        max_down = math.floor(ready / self.max_scale_down_rate)
        stable_pods = math.ceil(stable / rev.target)
        panic_pods = math.ceil(panic / rev.target)
        desired_stable = int(min(max(stable_pods, max_down), max_up))
        desired_panic = int(min(max(panic_pods, max_down), max_up))
        over_threshold = panic_pods / ready >= self.panic_threshold
        if over_threshold:
            rev.panic_time = now  # enter, or extend
        elif rev.panic_time is not None and rev.panic_time + self.stable_window < now:
            rev.panic_time = None
            rev.max_panic_pods = 0
        want = desired_stable
        if rev.panic_time is not None:
            # Never scale down in panic: keep the highest count asked for since it began.
            rev.max_panic_pods = max(rev.max_panic_pods, want, desired_panic)
            want = rev.max_panic_pods
        return want

    def _mean(self, rev: _Revision, now: float, window: float) -> float:
        # Like Knative's bucket average: over the samples present, at most one window.
        inside = [v for t, v in rev.samples if t > now - window + _EPSILON]
        return sum(inside) / len(inside) if inside else 0.0

    @staticmethod
    def _bounded(rev: _Revision, replicas: int) -> int:
        return max(rev.min_scale, min(rev.max_scale, replicas))


class HpaWarmBaseline(HpaBaseline):
    """The plain HPA, with on-demand models kept warm: ``minReplicas: 1`` and one replica
    running from the start (the set-up an operator picks when nothing can scale from zero).

    Same HPA as ``HpaBaseline`` (raw signals, behavior nil, 300 s downscale stabilization);
    the only change is that a model whose policy allows 0 never goes below 1.
    """

    name = "hpa-warm"

    def __init__(self, policies: Sequence[ModelPolicy], **options: float) -> None:
        super().__init__(policies, **options)
        self.initial_replicas = {p.model: max(1, p.replicas.min) for p in policies}


@dataclass
class _Route:
    """One HTTPScaledObject: its lower bound, its generated HPA and its activity."""

    min_replicas: int
    hpa: HpaEmulator
    last_active: float | None = None


class KedaHttpBaseline:
    """KEDA with the HTTP add-on: the interceptor in the request path holds requests while a
    workload is at zero, and the add-on's scaler reports its in-flight count to KEDA.

    Sources: kedacore/http-add-on docs (keda.sh/http-add-on, "Scaling" and the
    HTTPScaledObject reference): the scaling metric is the interceptor's concurrency (in-flight
    requests per route) against ``scalingMetric.concurrency.targetValue`` per replica (default
    100; here the policy's ``inflightRequests`` target, as an operator sizes it to the server's
    slots), through the HPA KEDA generates (``desired = ceil(concurrency / target)``, default
    HPA behavior: 300 s downscale stabilization, 15 s sync); ``scaledownPeriod`` (default
    300 s) after the route's last in-flight request the workload goes to zero; the interceptor
    holds requests at zero (cold start) and KEDA's external-push trigger activates the
    workload on the first one (``HOLDING``: the engine holds, ``wake`` scales 0 -> min(1)).

    The concurrency is the interceptor's own count (``ModelView.inflight``), not Prometheus:
    it never goes missing, so a metrics outage does not affect it.
    """

    name = "keda-http"

    def __init__(
        self,
        policies: Sequence[ModelPolicy],
        *,
        interval: float = 15.0,
        scaledown_period: float = 300.0,
        default_target: float = 100.0,
        tolerance: float = 0.1,
        downscale_stabilization_seconds: float = 300.0,
    ) -> None:
        self.interval = interval
        self.scaledown_period = scaledown_period
        self._routes: dict[str, _Route] = {}
        for p in policies:
            self._routes[p.model] = _Route(
                min_replicas=p.replicas.min,
                hpa=_hpa_for(
                    p,
                    sync_period_seconds=interval,
                    tolerance=tolerance,
                    downscale_stabilization_seconds=downscale_stabilization_seconds,
                    targets=[p.targets.inflight_requests or default_target],
                ),
            )

    def wake(self, model: str, now: float, spec_replicas: int) -> int | None:
        """The external-push activation: the first held request scales the route 0 -> 1."""
        route = self._routes.get(model)
        if route is None or spec_replicas != 0:
            return None
        route.last_active = now
        return max(1, route.min_replicas)

    def tick(self, view: ClusterView) -> Mapping[str, int]:
        """One HPA sync per route, and the scale-to-zero of routes idle for scaledownPeriod."""
        wanted: dict[str, int] = {}
        for name, route in self._routes.items():
            model = view.models.get(name)
            if model is None:
                continue
            if model.inflight > 0:
                route.last_active = view.now
            spec = model.spec_replicas
            if spec == 0:
                continue  # woken by `wake` when a request is held
            if (
                route.min_replicas == 0
                and model.inflight == 0
                and route.last_active is not None
                and view.now - route.last_active >= self.scaledown_period - _EPSILON
            ):
                wanted[name] = 0
                continue
            sync = _sync(route.hpa, view, name, spec, [model.inflight * 1000])
            if sync.rescaled:
                wanted[name] = sync.desired_replicas
        return wanted

    def skippable_until(self, stretch: IdleStretch) -> float:
        """Until an idle route's scaledownPeriod runs out, if the HPAs of the routes above
        zero (the ones that sync) repeat themselves."""
        view = stretch.view
        until = stretch.until
        for name, route in self._routes.items():
            spec = view.models[name].spec_replicas
            if spec == 0:
                continue  # not synced, woken only by a held request
            if not route.hpa.repeats(spec_replicas=spec):
                return view.now
            if route.min_replicas == 0 and route.last_active is not None:
                until = min(until, route.last_active + self.scaledown_period - 2 * _EPSILON)
        return until

    def skip(self, stretch: IdleStretch, ticks: Sequence[float]) -> None:
        """The syncs of the routes above zero."""
        for name, route in self._routes.items():
            if stretch.view.models[name].spec_replicas > 0:
                route.hpa.skip_syncs(ticks)
