"""A tick-for-tick emulation of the ``autoscaling/v2`` HPA controller for External metrics.

The simulator needs the HPA that sits in front of every policy (scaler serves it
``scaler-desired-replicas``; KEDA and a plain HPA feed it raw signals), so the emulation follows
the upstream controller step by step rather than approximating it:

- guards (``reconcileAutoscaler``): spec 0 with minReplicas != 0 disables scaling; spec above
  max or below min is clamped without reading metrics;
- per-metric proposals (``GetExternalMetricReplicas`` / ``GetExternalPerPodMetricReplicas``):
  milli-units, ceil, inclusive per-direction tolerance, Value targets scaled by ready pods;
- several metrics (``computeReplicasForMetrics``): max of valid proposals; an invalid metric
  holds the count if it is the only one or if the valid ones would scale down;
- normalisation: legacy (``behavior`` nil: 300 s max-of-recommendations window, scale-up cap
  ``max(2·current, 4)``) or with behavior (up/down stabilization windows, Pods/Percent policies
  over their periods with scale-event bookkeeping, selectPolicy, Percent scale-down truncation);
- the first sync's initial recommendation, and the minReplicas 0 (``HPAScaleToZero``) branches.

Sources: kubernetes/kubernetes ``pkg/controller/podautoscaler/{horizontal.go,
replica_calculator.go}`` and ``pkg/apis/autoscaling/v2/defaults.go``, summarised in
docs/baselines.md ("Kubernetes HPA"); the upstream unit tests, restated as inputs and
expected outputs in ``tests/simulation/hpa_cases.json``, run through :func:`evaluate_case`.

Times are float seconds on the simulator's clock. Window tests follow upstream exactly: a
legacy recommendation is old when ``t < now - window``; a behavior recommendation or scale
event counts inside a window when ``t > now - window``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1

SelectPolicy: TypeAlias = Literal["Max", "Min", "Disabled"]
"""How an HPA picks among its scaling policies (``Disabled`` forbids scaling that way)."""

PolicyType: TypeAlias = Literal["Pods", "Percent"]
"""A scaling policy's unit: absolute pods, or percent of the period's starting count."""

# ScalingActive reasons and events, as upstream names them.
REASON_SCALING_DISABLED = "ScalingDisabled"
REASON_VALID_METRIC = "ValidMetricFound"
REASON_FAILED_METRIC = "FailedGetExternalMetric"
REASON_TOO_MANY = "TooManyReplicas"
REASON_TOO_FEW = "TooFewReplicas"
REASON_WITHIN_RANGE = "DesiredWithinRange"
REASON_SCALE_UP_LIMIT = "ScaleUpLimit"
REASON_SCALE_DOWN_LIMIT = "ScaleDownLimit"
EVENT_RESCALE = "SuccessfulRescale"
EVENT_FAILED_COMPUTE = "FailedComputeMetricsReplicas"


# --- spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricTarget:
    """One External metric's target, in milli-units (``Quantity.MilliValue()``)."""

    kind: Literal["Value", "AverageValue"]
    milli: int

    def __post_init__(self) -> None:
        if self.kind not in ("Value", "AverageValue"):
            raise ValueError(f"metric target kind {self.kind!r}: expected Value or AverageValue")
        if self.milli <= 0:
            raise ValueError(f"metric target {self.kind} must be positive, got {self.milli}m")


@dataclass(frozen=True)
class HpaPolicy:
    """One scaling policy: at most `value` pods (or percent) per `period_seconds`."""

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"scaling policy type {self.type!r}: expected Pods or Percent")
        if self.value <= 0:
            raise ValueError(f"scaling policy value must be positive, got {self.value}")
        if not 1 <= self.period_seconds <= 1800:
            raise ValueError(f"scaling policy periodSeconds {self.period_seconds} not in 1..1800")


@dataclass(frozen=True)
class HpaScalingRules:
    """The resolved rules for one direction (``HPAScalingRules`` after API defaulting).

    `stabilization_window_seconds` None is left for the controller to fill with its
    ``--horizontal-pod-autoscaler-downscale-stabilization`` value (scale-down only).
    `tolerance` None means the cluster-wide tolerance (``HpaSpec.tolerance``).
    """

    stabilization_window_seconds: int | None
    select_policy: SelectPolicy
    policies: tuple[HpaPolicy, ...]
    tolerance: float | None = None

    def __post_init__(self) -> None:
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError(f"stabilizationWindowSeconds {window} not in 0..3600")
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ValueError(f"selectPolicy {self.select_policy!r}: expected Max, Min or Disabled")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    @property
    def longest_period_seconds(self) -> int:
        """The longest policy period: scale events older than this are outdated."""
        return max((p.period_seconds for p in self.policies), default=0)


@dataclass(frozen=True)
class PartialScalingRules:
    """Rules for one direction as a user writes them: every field may be left unset."""

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[HpaPolicy, ...] | None = None
    tolerance: float | None = None


DEFAULT_SCALE_UP_POLICIES = (HpaPolicy("Pods", 4, 15), HpaPolicy("Percent", 100, 15))
DEFAULT_SCALE_DOWN_POLICIES = (HpaPolicy("Percent", 100, 15),)


def _resolve(
    given: PartialScalingRules | None,
    window: int | None,
    policies: tuple[HpaPolicy, ...],
) -> HpaScalingRules:
    given = given or PartialScalingRules()
    return HpaScalingRules(
        stabilization_window_seconds=(
            window
            if given.stabilization_window_seconds is None
            else given.stabilization_window_seconds
        ),
        select_policy=given.select_policy or "Max",
        # A user's policy list replaces the defaults entirely, as copyHPAScalingRules does.
        policies=policies if given.policies is None else tuple(given.policies),
        tolerance=given.tolerance,
    )


def resolve_scale_up_rules(given: PartialScalingRules | None = None) -> HpaScalingRules:
    """API defaulting of scale-up rules (``GenerateHPAScaleUpRules``): window 0, Max,
    Pods 4 / 15 s and Percent 100 / 15 s, each applied only where the user left a field unset.
    """
    return _resolve(given, 0, DEFAULT_SCALE_UP_POLICIES)


def resolve_scale_down_rules(given: PartialScalingRules | None = None) -> HpaScalingRules:
    """API defaulting of scale-down rules (``GenerateHPAScaleDownRules``): window left unset
    (the controller fills in 300 s), Max, Percent 100 / 15 s.
    """
    return _resolve(given, None, DEFAULT_SCALE_DOWN_POLICIES)


@dataclass(frozen=True)
class HpaBehavior:
    """``spec.behavior`` after API defaulting; an HPA without behavior takes the legacy path."""

    scale_up: HpaScalingRules
    scale_down: HpaScalingRules

    @classmethod
    def defaulted(
        cls,
        scale_up: PartialScalingRules | None = None,
        scale_down: PartialScalingRules | None = None,
    ) -> HpaBehavior:
        """A behavior from partially written rules, with upstream defaults filled in.

        Upstream defaults a behavior only when one is set at all; ``HpaSpec(behavior=None)``
        stays on the legacy path.
        """
        return cls(resolve_scale_up_rules(scale_up), resolve_scale_down_rules(scale_down))


@dataclass(frozen=True)
class HpaSpec:
    """One HorizontalPodAutoscaler plus the controller flags that shape it.

    `metrics` are External metrics, in order; ``HpaEmulator.sync`` takes one usage per metric.
    `scale_up_limit_factor` / `scale_up_limit_minimum` are the legacy scale-up cap's
    constants (production 2 and 4; upstream's test harness uses 8).
    """

    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    min_replicas: int = 1
    behavior: HpaBehavior | None = None
    tolerance: float = 0.1
    downscale_stabilization_seconds: float = 300.0
    sync_period_seconds: float = 15.0
    scale_up_limit_factor: float = 2.0
    scale_up_limit_minimum: float = 4.0

    def __post_init__(self) -> None:
        if self.max_replicas < 1:
            raise ValueError(f"maxReplicas must be >= 1, got {self.max_replicas}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} not in 0..maxReplicas ({self.max_replicas})"
            )
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.sync_period_seconds <= 0:
            raise ValueError(f"sync period must be positive, got {self.sync_period_seconds}")

    @property
    def tolerances(self) -> Tolerances:
        """The per-direction tolerances in force (behavior overrides the cluster value)."""
        down = up = self.tolerance
        if self.behavior is not None:
            if self.behavior.scale_down.tolerance is not None:
                down = self.behavior.scale_down.tolerance
            if self.behavior.scale_up.tolerance is not None:
                up = self.behavior.scale_up.tolerance
        return Tolerances(scale_down=down, scale_up=up)


# --- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """The no-change band around a usage ratio of 1, per direction."""

    scale_down: float = 0.1
    scale_up: float = 0.1

    def contains(self, ratio: float) -> bool:
        """Whether `ratio` is inside the band, both ends inclusive (NaN is not)."""
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True)
class Recommendation:
    """One unstabilized (raw) recommendation and when it was made."""

    time: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    """One scaling action, as a positive magnitude; `outdated` slots are reused."""

    time: float
    replica_change: int
    outdated: bool = False


@dataclass(frozen=True)
class HpaHistory:
    """What the controller remembers per HPA between syncs."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class HpaSync:
    """The outcome of one sync.

    `reason` is the ScalingActive reason (``ScalingDisabled``, ``ValidMetricFound``,
    ``FailedGetExternalMetric``), or ``TooManyReplicas`` / ``TooFewReplicas`` when a guard
    clamped the count without reading metrics. `limit_reason` is the ScalingLimited reason
    when normalisation ran. `event` is the Kubernetes event emitted, if any.
    """

    desired_replicas: int
    rescaled: bool
    reason: str
    event: str | None
    limit_reason: str | None = None


# --- per-metric proposals ------------------------------------------------------------------


class HpaMetricError(Exception):
    """A metric that yields no proposal this sync (fetch error, no items, no pods)."""


@dataclass(frozen=True)
class MetricProposal:
    """One metric's replica proposal and the usage it reports in status."""

    replicas: int
    usage_milli: int


def sum_milli(values: Iterable[int]) -> int:
    """The summed milli-values of a metric's items, saturating at MaxInt64 as upstream."""
    total = 0
    for value in values:
        total += value
        if total >= MAX_INT64:
            return MAX_INT64
    return total


def _ceil_int32(value: float) -> int:
    return int(min(math.ceil(value), MAX_INT32))


def external_value_proposal(
    *,
    usage_milli: int,
    target_milli: int,
    current_replicas: int,
    ready_pods: int,
    listed_pods: int,
    tolerances: Tolerances,
) -> MetricProposal:
    """A Value target's proposal (``GetExternalMetricReplicas``).

    Outside tolerance the ratio multiplies the Running+Ready pod count, so starting pods
    lower the proposal; at 0 current replicas it is ``ceil(usage/target)``. Raises
    HpaMetricError when the pod selector lists no pod at all.
    """
    ratio = usage_milli / target_milli
    if current_replicas == 0:
        # Reachable only with minReplicas 0: no tolerance, no pod count.
        return MetricProposal(_ceil_int32(ratio), usage_milli)
    if tolerances.contains(ratio):
        return MetricProposal(current_replicas, usage_milli)
    if listed_pods <= 0:
        raise HpaMetricError("no pods returned by selector while calculating replica count")
    return MetricProposal(_ceil_int32(ratio * ready_pods), usage_milli)


def external_average_value_proposal(
    *, usage_milli: int, target_milli: int, status_replicas: int, tolerances: Tolerances
) -> MetricProposal:
    """An AverageValue target's proposal (``GetExternalPerPodMetricReplicas``).

    ``ceil(usage/target)`` unless the per-pod ratio over `status_replicas` is within
    tolerance (then `status_replicas`). At 0 pods the ratio is +Inf or NaN, never within.
    """
    denominator = float(target_milli) * float(status_replicas)
    if denominator == 0:
        ratio = math.nan if usage_milli == 0 else math.inf
    else:
        ratio = usage_milli / denominator
    replicas = status_replicas
    if not tolerances.contains(ratio):
        replicas = _ceil_int32(usage_milli / target_milli)
    if usage_milli >= MAX_INT64:
        reported = MAX_INT64
    elif status_replicas > 0:
        reported = -(-usage_milli // status_replicas)
    else:
        reported = 0
    return MetricProposal(replicas, reported)


def combine_proposals(proposals: Sequence[int | None], spec_replicas: int) -> int | None:
    """The max over valid proposals (``computeReplicasForMetrics``), or None to hold.

    None marks an invalid metric. The count is held when every metric is invalid, or when
    any is invalid and the valid ones would scale down: a failing metric never scales down.
    """
    valid = [p for p in proposals if p is not None]
    invalid = len(proposals) - len(valid)
    replicas = max(valid, default=0)
    if invalid >= len(proposals) or (invalid > 0 and replicas < spec_replicas):
        return None
    return replicas


# --- legacy normalisation ------------------------------------------------------------------


def stabilize_legacy(
    history: Sequence[Recommendation], *, now: float, raw: int, window_seconds: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """Legacy downscale stabilization (``stabilizeRecommendation``).

    Returns the max of `raw` and the recommendations not older than the window, and the
    history with `raw` stored: it overwrites the last old entry, else it is appended.
    """
    cutoff = now - window_seconds
    stabilized = raw
    old_index: int | None = None
    for index, rec in enumerate(history):
        if rec.time < cutoff:
            old_index = index
        elif rec.replicas > stabilized:
            stabilized = rec.replicas
    return stabilized, _store(history, old_index, Recommendation(now, raw))


def _store(
    history: Sequence[Recommendation], old_index: int | None, new: Recommendation
) -> tuple[Recommendation, ...]:
    stored = list(history)
    if old_index is None:
        stored.append(new)
    else:
        stored[old_index] = new
    return tuple(stored)


def convert_with_rules(
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    scale_up_limit_factor: float = 2.0,
    scale_up_limit_minimum: float = 4.0,
) -> tuple[int, str]:
    """The legacy clamp (``convertDesiredReplicasWithRules``) and its ScalingLimited reason.

    The upper bound is ``min(max_replicas, max(factor·current, minimum))``.
    """
    scale_up_limit = int(max(scale_up_limit_factor * current, scale_up_limit_minimum))
    if max_replicas > scale_up_limit:
        maximum, limited = scale_up_limit, REASON_SCALE_UP_LIMIT
    else:
        maximum, limited = max_replicas, REASON_TOO_MANY
    if desired < min_replicas:
        return min_replicas, REASON_TOO_FEW
    if desired > maximum:
        return maximum, limited
    return desired, REASON_WITHIN_RANGE


# --- behavior normalisation ----------------------------------------------------------------


def stabilize_with_behavior(
    history: Sequence[Recommendation],
    *,
    now: float,
    raw: int,
    current: int,
    up_window_seconds: float,
    down_window_seconds: float,
) -> tuple[int, tuple[Recommendation, ...]]:
    """Both stabilization windows (``stabilizeRecommendationWithBehaviors``).

    Scale-up goes no higher than the min of recommendations inside the up window; scale-down
    no lower than the max inside the down window. `raw` is stored, overwriting the last entry
    older than both windows, else appended.
    """
    up_cutoff = now - up_window_seconds
    down_cutoff = now - down_window_seconds
    up_rec = down_rec = raw
    old_index: int | None = None
    for index, rec in enumerate(history):
        if rec.time > up_cutoff:
            up_rec = min(up_rec, rec.replicas)
        if rec.time > down_cutoff:
            down_rec = max(down_rec, rec.replicas)
        if rec.time < up_cutoff and rec.time < down_cutoff:
            old_index = index
    recommendation = current
    if recommendation < up_rec:
        recommendation = up_rec
    if recommendation > down_rec:
        recommendation = down_rec
    return recommendation, _store(history, old_index, Recommendation(now, raw))


def replicas_changed_within(
    events: Iterable[ScaleEvent], *, now: float, period_seconds: float
) -> int:
    """Replicas changed by `events` inside the last `period_seconds` (outdated ones too)."""
    cutoff = now - period_seconds
    return sum(e.replica_change for e in events if e.time > cutoff)


def _period_start(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    policy: HpaPolicy,
    now: float,
) -> int:
    added = replicas_changed_within(up_events, now=now, period_seconds=policy.period_seconds)
    removed = replicas_changed_within(down_events, now=now, period_seconds=policy.period_seconds)
    return current - added + removed


def scale_up_limit(
    *,
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: HpaScalingRules,
    now: float,
) -> int:
    """The most replicas the scale-up policies allow now.

    Upstream ``calculateScaleUpLimitWithScalingRules``: each policy starts from the count
    at the start of its period; Percent rounds up.
    """
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, up_events, down_events, policy, now)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if rules.select_policy == "Min":
        return min(proposals, default=MAX_INT32)
    return max(proposals, default=-MAX_INT32 - 1)


def scale_down_limit(
    *,
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: HpaScalingRules,
    now: float,
) -> int:
    """The fewest replicas the scale-down policies allow now.

    Upstream ``calculateScaleDownLimitWithBehaviors``: Percent truncates toward zero (Go's
    int32 conversion); Max picks the biggest change.
    """
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, up_events, down_events, policy, now)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if rules.select_policy == "Min":
        return max(proposals, default=-MAX_INT32 - 1)
    return min(proposals, default=MAX_INT32)


def convert_with_behavior_rate(
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    behavior: HpaBehavior,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> tuple[int, str]:
    """The policy and bounds clamp (``convertDesiredReplicasWithBehaviorRate``) and its reason.

    The policy limit is never allowed to move the count the wrong way (held at `current`).
    """
    if desired > current:
        limit = scale_up_limit(
            current=current,
            up_events=up_events,
            down_events=down_events,
            rules=behavior.scale_up,
            now=now,
        )
        limit = max(limit, current)
        if max_replicas > limit:
            maximum, reason = limit, REASON_SCALE_UP_LIMIT
        else:
            maximum, reason = max_replicas, REASON_TOO_MANY
        if desired > maximum:
            return maximum, reason
    elif desired < current:
        limit = scale_down_limit(
            current=current,
            up_events=up_events,
            down_events=down_events,
            rules=behavior.scale_down,
            now=now,
        )
        limit = min(limit, current)
        if min_replicas < limit:
            minimum, reason = limit, REASON_SCALE_DOWN_LIMIT
        else:
            minimum, reason = min_replicas, REASON_TOO_FEW
        if desired < minimum:
            return minimum, reason
    return desired, REASON_WITHIN_RANGE


def store_scale_event(
    events: Sequence[ScaleEvent],
    *,
    now: float,
    replica_change: int,
    rules: HpaScalingRules | None,
) -> tuple[ScaleEvent, ...]:
    """The event log of one direction after a scaling action (``storeScaleEvent``).

    `rules` are that direction's rules, None for an HPA without behavior (nothing stored).
    Events older than the longest policy period are marked outdated; the new event overwrites
    the last outdated one, else it is appended.
    """
    if rules is None:
        return tuple(events)
    cutoff = now - rules.longest_period_seconds
    marked = [replace(e, outdated=True) if e.time < cutoff else e for e in events]
    new = ScaleEvent(now, replica_change)
    old_indices = [i for i, e in enumerate(marked) if e.outdated]
    if old_indices:
        marked[old_indices[-1]] = new
    else:
        marked.append(new)
    return tuple(marked)


# --- the controller ------------------------------------------------------------------------


class HpaEmulator:
    """One HPA under the controller: call ``sync`` once per sync period.

    The emulator keeps the controller's per-HPA memory (recommendations and scale events).
    A fresh emulator (``history=None``) records the current replicas as a recommendation on
    its first sync, as the controller does; a given `history` is taken as already synced.
    """

    def __init__(self, spec: HpaSpec, history: HpaHistory | None = None) -> None:
        self.spec = spec
        self._initialized = history is not None
        self._history = history or HpaHistory()
        # The last sync, if it wrote nothing: its time, the count it saw and the raw
        # recommendation it stored (None: it stored none, scaling disabled or no valid metric).
        self._quiet: tuple[float, int, int | None] | None = None

    @property
    def state(self) -> HpaHistory:
        """The controller's memory for this HPA as of the last sync."""
        return self._history

    def sync(
        self,
        *,
        now: float,
        spec_replicas: int,
        status_replicas: int,
        ready_pods: int,
        usages: Sequence[int | None],
    ) -> HpaSync:
        """One reconcile: read /scale and the metrics, return what the HPA writes.

        `usages[i]` is metric i's summed milli-value, or None when the fetch failed or
        returned no items. `status_replicas` is the pods that exist (scale.status.replicas);
        `ready_pods` those Running and Ready.
        """
        if len(usages) != len(self.spec.metrics):
            raise ValueError(
                f"{len(usages)} usages for {len(self.spec.metrics)} metrics in the HPA spec"
            )
        tolerances = self.spec.tolerances
        proposals: list[int | None] = []
        for target, usage in zip(self.spec.metrics, usages, strict=True):
            proposals.append(
                self._propose(target, usage, spec_replicas, status_replicas, ready_pods, tolerances)
            )
        return self.sync_proposals(now=now, spec_replicas=spec_replicas, proposals=proposals)

    @staticmethod
    def _propose(
        target: MetricTarget,
        usage: int | None,
        spec_replicas: int,
        status_replicas: int,
        ready_pods: int,
        tolerances: Tolerances,
    ) -> int | None:
        if usage is None:
            return None
        usage = min(usage, MAX_INT64)
        try:
            if target.kind == "AverageValue":
                return external_average_value_proposal(
                    usage_milli=usage,
                    target_milli=target.milli,
                    status_replicas=status_replicas,
                    tolerances=tolerances,
                ).replicas
            return external_value_proposal(
                usage_milli=usage,
                target_milli=target.milli,
                current_replicas=spec_replicas,
                ready_pods=ready_pods,
                listed_pods=max(status_replicas, ready_pods),
                tolerances=tolerances,
            ).replicas
        except HpaMetricError:
            return None

    def sync_proposals(
        self, *, now: float, spec_replicas: int, proposals: Sequence[int | None]
    ) -> HpaSync:
        """One reconcile from per-metric proposals already computed (None = invalid metric).

        ``sync`` calls it; tests use it to feed a proposal from a non-External metric.
        """
        spec = self.spec
        if not self._initialized:
            # recordInitialRecommendation: the first sync's current count takes part in
            # stabilization, so a new HPA does not drop replicas at once.
            self._history = replace(
                self._history, recommendations=(Recommendation(now, spec_replicas),)
            )
            self._initialized = True
        current = spec_replicas
        self._quiet = None
        if current == 0 and spec.min_replicas != 0:
            self._quiet = (now, current, None)
            return HpaSync(0, False, REASON_SCALING_DISABLED, None)
        if current > spec.max_replicas:
            return self._rescale(now, current, spec.max_replicas, REASON_TOO_MANY, None)
        if current < spec.min_replicas:
            return self._rescale(now, current, spec.min_replicas, REASON_TOO_FEW, None)
        raw = combine_proposals(proposals, current)
        if raw is None:
            self._quiet = (now, current, None)
            return HpaSync(current, False, REASON_FAILED_METRIC, EVENT_FAILED_COMPUTE)
        desired, limited = self._normalize(now, current, raw)
        if desired == current:
            self._quiet = (now, current, raw)
            return HpaSync(current, False, REASON_VALID_METRIC, None, limited)
        return self._rescale(now, current, desired, REASON_VALID_METRIC, limited)

    def repeats(self, *, spec_replicas: int) -> bool:
        """Whether syncs fed as the last one was (the same count, pods and usages) write
        nothing and change nothing but the recommendations kept, as ``skip_syncs`` keeps them.

        True when the last sync wrote nothing and every recommendation still inside a
        stabilization window is the one it made: stabilization then gives that one again,
        whatever expires (a recommendation outside the windows stays outside).
        """
        if self._quiet is None or self._quiet[1] != spec_replicas:
            return False
        last, _, raw = self._quiet
        return raw is None or all(
            r.replicas == raw for r in self._history.recommendations if self._inside(r, last)
        )

    def skip_syncs(self, times: Iterable[float]) -> None:
        """Keep what syncs at `times` (ascending), fed as the last one, would have stored:
        the recommendation, at each time, as normalisation stores it (`repeats` must hold)."""
        assert self._quiet is not None, "the last sync wrote a change"
        _, current, raw = self._quiet
        for now in times:
            if raw is not None:  # else those syncs store nothing
                self._normalize(now, current, raw)
            self._quiet = (now, current, raw)

    def _inside(self, recommendation: Recommendation, now: float) -> bool:
        """Whether `recommendation` takes part in a sync's stabilization at `now` (the
        comparisons of stabilize_legacy / stabilize_with_behavior)."""
        behavior = self.spec.behavior
        if behavior is None:
            return recommendation.time >= now - self.spec.downscale_stabilization_seconds
        up, down = self._behavior_windows(behavior)
        return recommendation.time > now - up or recommendation.time > now - down

    def _behavior_windows(self, behavior: HpaBehavior) -> tuple[float, float]:
        """The up and down stabilization windows (an unset down window: the controller's)."""
        up = behavior.scale_up.stabilization_window_seconds or 0
        down = behavior.scale_down.stabilization_window_seconds
        return up, self.spec.downscale_stabilization_seconds if down is None else down

    def _normalize(self, now: float, current: int, raw: int) -> tuple[int, str]:
        behavior = self.spec.behavior
        if behavior is None:
            return self._normalize_legacy(now, current, raw)
        return self._normalize_with_behavior(now, current, raw, behavior)

    def _normalize_legacy(self, now: float, current: int, raw: int) -> tuple[int, str]:
        spec = self.spec
        stabilized, recommendations = stabilize_legacy(
            self._history.recommendations,
            now=now,
            raw=raw,
            window_seconds=spec.downscale_stabilization_seconds,
        )
        self._history = replace(self._history, recommendations=recommendations)
        return convert_with_rules(
            current=current,
            desired=stabilized,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            scale_up_limit_factor=spec.scale_up_limit_factor,
            scale_up_limit_minimum=spec.scale_up_limit_minimum,
        )

    def _normalize_with_behavior(
        self, now: float, current: int, raw: int, behavior: HpaBehavior
    ) -> tuple[int, str]:
        spec = self.spec
        # maybeInitScaleDownStabilizationWindow: the controller flag fills an unset window.
        up_window, down_window = self._behavior_windows(behavior)
        stabilized, recommendations = stabilize_with_behavior(
            self._history.recommendations,
            now=now,
            raw=raw,
            current=current,
            up_window_seconds=up_window,
            down_window_seconds=down_window,
        )
        self._history = replace(self._history, recommendations=recommendations)
        return convert_with_behavior_rate(
            current=current,
            desired=stabilized,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            behavior=behavior,
            up_events=self._history.scale_up_events,
            down_events=self._history.scale_down_events,
            now=now,
        )

    def _rescale(
        self, now: float, current: int, desired: int, reason: str, limited: str | None
    ) -> HpaSync:
        behavior = self.spec.behavior
        if behavior is not None:
            # Scale events are kept only for an HPA with behavior (they feed its policies).
            history = self._history
            if desired > current:
                history = replace(
                    history,
                    scale_up_events=store_scale_event(
                        history.scale_up_events,
                        now=now,
                        replica_change=desired - current,
                        rules=behavior.scale_up,
                    ),
                )
            else:
                history = replace(
                    history,
                    scale_down_events=store_scale_event(
                        history.scale_down_events,
                        now=now,
                        replica_change=current - desired,
                        rules=behavior.scale_down,
                    ),
                )
            self._history = history
        return HpaSync(desired, True, reason, EVENT_RESCALE, limited)


# --- reference cases -----------------------------------------------------------------------

_CASE_NOW = 0.0  # case times are relative to the evaluation instant


def case_tolerances(data: Mapping[str, Any] | None) -> Tolerances:
    """The `tolerance` field of a case ({scale_down, scale_up}); default 0.1 / 0.1."""
    if data is None:
        return Tolerances()
    return Tolerances(scale_down=float(data["scale_down"]), scale_up=float(data["scale_up"]))


def case_policy(data: Mapping[str, Any]) -> HpaPolicy:
    """A case's policy object ({type, value, period_seconds})."""
    return HpaPolicy(data["type"], int(data["value"]), int(data["period_seconds"]))


def case_partial_rules(data: Mapping[str, Any] | None) -> PartialScalingRules | None:
    """A case's RULES object, as written (null fields stay unset)."""
    if data is None:
        return None
    policies = data.get("policies")
    return PartialScalingRules(
        stabilization_window_seconds=data.get("stabilization_window_seconds"),
        select_policy=data.get("select_policy"),
        policies=None if policies is None else tuple(case_policy(p) for p in policies),
    )


def case_rules(data: Mapping[str, Any] | None) -> HpaScalingRules | None:
    """A case's fully written RULES object (store_events stage), None for null."""
    if data is None:
        return None
    return HpaScalingRules(
        stabilization_window_seconds=data.get("stabilization_window_seconds"),
        select_policy=data["select_policy"],
        policies=tuple(case_policy(p) for p in data["policies"]),
    )


def case_behavior(data: Mapping[str, Any]) -> HpaBehavior:
    """A case's behavior ({scale_up, scale_down}) with upstream defaults resolved."""
    return HpaBehavior.defaulted(
        case_partial_rules(data.get("scale_up")), case_partial_rules(data.get("scale_down"))
    )


def case_recommendations(data: Iterable[Mapping[str, Any]]) -> tuple[Recommendation, ...]:
    """A case's recommendation log ([{replicas, t}]), at absolute times."""
    return tuple(Recommendation(_CASE_NOW + float(r["t"]), int(r["replicas"])) for r in data)


def case_events(data: Iterable[Mapping[str, Any]]) -> tuple[ScaleEvent, ...]:
    """A case's scale-event log ([{replica_change, t}]), at absolute times."""
    return tuple(
        ScaleEvent(_CASE_NOW + float(e["t"]), int(e["replica_change"]), bool(e.get("outdated")))
        for e in data
    )


def evaluate_case(case: Mapping[str, Any]) -> int:
    """The desired replicas for one case of ``tests/simulation/hpa_cases.json``.

    Raises ValueError for the stages that produce no replica count (defaults, store_events,
    *_limit): those are checked through the public functions they name.
    """
    kind = case["kind"]
    data = case["input"]
    if kind in ("external_value", "external_average_value"):
        if data["level"] == "calculator":
            return _calculator_case(kind, data).replicas
        return _controller_case(kind, data).desired_replicas
    if kind == "legacy":
        return _legacy_case(data)
    if kind == "behavior":
        return _behavior_case(data)
    raise ValueError(f"case {case.get('id')!r}: unknown kind {kind!r}")


def _calculator_case(kind: str, data: Mapping[str, Any]) -> MetricProposal:
    usage = sum_milli(int(v) for v in data["metric_values_milli"])
    tolerances = case_tolerances(data.get("tolerance"))
    if kind == "external_value":
        pods = data.get("pods")
        return external_value_proposal(
            usage_milli=usage,
            target_milli=int(data["target_value_milli"]),
            current_replicas=int(data["current_replicas"]),
            ready_pods=int(data["ready_pod_count"]),
            listed_pods=len(pods) if pods is not None else int(data["ready_pod_count"]),
            tolerances=tolerances,
        )
    return external_average_value_proposal(
        usage_milli=usage,
        target_milli=int(data["target_average_value_milli"]),
        status_replicas=int(data["status_replicas"]),
        tolerances=tolerances,
    )


def calculator_case_usage(case: Mapping[str, Any]) -> int:
    """The usage (milli) a calculator-level case reports in status."""
    return _calculator_case(case["kind"], case["input"]).usage_milli


def controller_case_sync(case: Mapping[str, Any]) -> HpaSync:
    """The full sync of a controller-level external_value / external_average_value case."""
    return _controller_case(case["kind"], case["input"])


def _controller_case(kind: str, data: Mapping[str, Any]) -> HpaSync:
    tolerances = case_tolerances(data.get("tolerance"))
    if tolerances.scale_down != tolerances.scale_up:
        raise ValueError("controller-level cases with per-direction tolerance need a behavior")
    if kind == "external_value":
        target = MetricTarget("Value", int(data["target_value_milli"]))
    else:
        target = MetricTarget("AverageValue", int(data["target_average_value_milli"]))
    behavior = data.get("behavior")
    spec = HpaSpec(
        max_replicas=int(data["max_replicas"]),
        metrics=(target,),
        min_replicas=int(data["min_replicas"]),
        behavior=None if behavior is None else case_behavior(behavior),
        tolerance=tolerances.scale_up,
        downscale_stabilization_seconds=float(
            data.get("downscale_stabilization_window_seconds", 300)
        ),
        scale_up_limit_factor=float(data.get("scale_up_limit_factor", 2.0)),
        scale_up_limit_minimum=float(data.get("scale_up_limit_minimum", 4.0)),
    )
    emulator = HpaEmulator(
        spec, HpaHistory(recommendations=case_recommendations(data.get("recommendations", [])))
    )
    values = data["metric_values_milli"]
    usage = None if data.get("metric_fetch_error") or not values else sum_milli(values)
    spec_replicas = int(data["spec_replicas"])
    others = data.get("other_metric_proposals")
    if not others:
        return emulator.sync(
            now=_CASE_NOW,
            spec_replicas=spec_replicas,
            status_replicas=int(data["status_replicas"]),
            ready_pods=int(data["ready_pod_count"]),
            usages=[usage],
        )
    # Another (CPU) metric's proposal is given: compute ours, then reconcile both.
    own = HpaEmulator._propose(
        target,
        usage,
        spec_replicas,
        int(data["status_replicas"]),
        int(data["ready_pod_count"]),
        tolerances,
    )
    return emulator.sync_proposals(
        now=_CASE_NOW, spec_replicas=spec_replicas, proposals=[own, *map(int, others)]
    )


def _legacy_case(data: Mapping[str, Any]) -> int:
    stage = data["stage"]
    if stage == "stabilize":
        return legacy_case_stabilize(data)[0]
    if stage == "convert":
        return legacy_case_convert(data)[0]
    if stage == "full":
        return legacy_case_sync(data).desired_replicas
    raise ValueError(f"unknown legacy stage {stage!r}")


def legacy_case_stabilize(data: Mapping[str, Any]) -> tuple[int, tuple[Recommendation, ...]]:
    """A legacy 'stabilize' case: the stabilized count and the stored log."""
    return stabilize_legacy(
        case_recommendations(data["recommendations"]),
        now=_CASE_NOW,
        raw=int(data["prenormalized_desired_replicas"]),
        window_seconds=float(data["downscale_stabilization_window_seconds"]),
    )


def legacy_case_convert(data: Mapping[str, Any]) -> tuple[int, str]:
    """A legacy 'convert' case: the clamped count and its ScalingLimited reason."""
    return convert_with_rules(
        current=int(data["current_replicas"]),
        desired=int(data["prenormalized_desired_replicas"]),
        min_replicas=int(data["min_replicas"]),
        max_replicas=int(data["max_replicas"]),
        scale_up_limit_factor=float(data["scale_up_limit_factor"]),
        scale_up_limit_minimum=float(data["scale_up_limit_minimum"]),
    )


def legacy_case_sync(data: Mapping[str, Any]) -> HpaSync:
    """A legacy 'full' case: one reconcile with behavior nil from the prenormalized count."""
    spec = HpaSpec(
        max_replicas=int(data["max_replicas"]),
        # One metric whose proposal is fed directly (the upstream tests use CPU).
        metrics=(MetricTarget("AverageValue", 1000),),
        min_replicas=int(data["min_replicas"]),
        downscale_stabilization_seconds=float(data["downscale_stabilization_window_seconds"]),
        scale_up_limit_factor=float(data["scale_up_limit_factor"]),
        scale_up_limit_minimum=float(data["scale_up_limit_minimum"]),
    )
    emulator = HpaEmulator(
        spec, HpaHistory(recommendations=case_recommendations(data["recommendations"]))
    )
    raw = data.get("prenormalized_desired_replicas")
    return emulator.sync_proposals(
        now=_CASE_NOW,
        spec_replicas=int(data["current_replicas"]),
        # Guards decide before metrics when no count is given; an invalid metric would hold.
        proposals=[None if raw is None else int(raw)],
    )


def _behavior_case(data: Mapping[str, Any]) -> int:
    stage = data["stage"]
    if stage == "rate_limit":
        return behavior_case_rate_limit(data)[0]
    if stage == "stabilize":
        return behavior_case_stabilize(data)[0]
    if stage == "full":
        return behavior_case_sync(data).desired_replicas
    raise ValueError(f"behavior stage {stage!r} produces no replica count")


def behavior_case_rate_limit(data: Mapping[str, Any]) -> tuple[int, str]:
    """A behavior 'rate_limit' case: the policy/bounds clamp and its ScalingLimited reason."""
    return convert_with_behavior_rate(
        current=int(data["current_replicas"]),
        desired=int(data["prenormalized_desired_replicas"]),
        min_replicas=int(data["min_replicas"]),
        max_replicas=int(data["max_replicas"]),
        behavior=case_behavior(data["behavior"]),
        up_events=case_events(data["scale_up_events"]),
        down_events=case_events(data["scale_down_events"]),
        now=_CASE_NOW,
    )


def behavior_case_stabilize(data: Mapping[str, Any]) -> tuple[int, tuple[Recommendation, ...]]:
    """A behavior 'stabilize' case: the stabilized count and the stored log."""
    behavior = data["behavior"]
    return stabilize_with_behavior(
        case_recommendations(data["recommendations"]),
        now=_CASE_NOW,
        raw=int(data["prenormalized_desired_replicas"]),
        current=int(data["current_replicas"]),
        up_window_seconds=float(behavior["scale_up"]["stabilization_window_seconds"]),
        down_window_seconds=float(behavior["scale_down"]["stabilization_window_seconds"]),
    )


def behavior_case_sync(data: Mapping[str, Any]) -> HpaSync:
    """A behavior 'full' case: one reconcile (stabilize, then rate-limit)."""
    spec = HpaSpec(
        max_replicas=int(data["max_replicas"]),
        metrics=(MetricTarget("AverageValue", 1000),),
        min_replicas=int(data["min_replicas"]),
        behavior=case_behavior(data["behavior"]),
        downscale_stabilization_seconds=float(data["default_scale_down_stabilization_seconds"]),
    )
    emulator = HpaEmulator(
        spec,
        HpaHistory(
            recommendations=case_recommendations(data["recommendations"]),
            scale_up_events=case_events(data["scale_up_events"]),
            scale_down_events=case_events(data["scale_down_events"]),
        ),
    )
    return emulator.sync_proposals(
        now=_CASE_NOW,
        spec_replicas=int(data["current_replicas"]),
        proposals=[int(data["prenormalized_desired_replicas"])],
    )


def behavior_case_limit(data: Mapping[str, Any]) -> int:
    """A behavior 'scale_up_limit' / 'scale_down_limit' case: the computed limit."""
    behavior = data["behavior"]
    direction = "scale_up" if data["stage"] == "scale_up_limit" else "scale_down"
    rules = case_partial_rules(behavior[direction])
    resolved: HpaScalingRules
    if data.get("resolve_defaults"):
        resolved = getattr(case_behavior(behavior), direction)
    else:
        resolved = _as_given(rules)
    compute = scale_up_limit if direction == "scale_up" else scale_down_limit
    return compute(
        current=int(data["current_replicas"]),
        up_events=case_events(data["scale_up_events"]),
        down_events=case_events(data["scale_down_events"]),
        rules=resolved,
        now=_CASE_NOW,
    )


def _as_given(rules: PartialScalingRules | None) -> HpaScalingRules:
    if rules is None or rules.select_policy is None or rules.policies is None:
        raise ValueError("rules used without defaults must set selectPolicy and policies")
    return HpaScalingRules(
        rules.stabilization_window_seconds, rules.select_policy, rules.policies, rules.tolerance
    )
