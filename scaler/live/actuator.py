"""Actuation: on-demand models cross zero through the scale subresource; events carry reasons.

Who moves replicas (as KEDA splits it):

- an on-demand model at 0 whose decision asks for N > 0: we write ``spec.replicas = N`` to
  the Deployment's scale subresource at once (the HPA cannot leave 0: at 0 replicas it sits
  in ``ScalingDisabled``, so nobody fights us);
- an on-demand model above 0 whose decision says 0 (the idle period passed): we write 0,
  and the HPA goes back to ``ScalingDisabled``;
- everything else (always-on models, and on-demand models between 1 and max) is the HPA's
  job: it follows ``scaler-desired-replicas``. We never write their scale.

We never write when the decision equals ``spec.replicas``. The write carries the
resourceVersion of the Deployment read this tick as a precondition; a 409 means somebody
changed it since (the HPA, a person, a status update): we re-read the scale, and retry once
if the fresh count still calls for the write. A 500 or a timeout is logged and counted
(``scaler_scale_writes_total{result}``); the next tick decides again from a fresh read, so a
write that did land (timeout after apply) is never repeated.

Each write is followed by an events.k8s.io/v1 Event on the Deployment: reason = the decision's
headline Reason, note = a readable sentence with all its reasons and signal values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import structlog

from scaler.core import Decision, ModelPolicy, Reason
from scaler.live.kube import DeploymentView, EventRecord, KubernetesApi, KubernetesError

_log = structlog.get_logger("scaler.live.actuator")

# The reason an event is filed under, most telling first; otherwise the decision's first.
_HEADLINE: Final = (
    Reason.SCALE_FROM_ZERO,
    Reason.SCALE_TO_ZERO,
    Reason.FALLBACK,
    Reason.PLACEMENT_CAP,
    Reason.COLD_START_OVERDUE,
    Reason.TREND_PROJECTED,
    Reason.BOUNDED_MIN,
    Reason.BOUNDED_MAX,
)


class ScaleWriteMetrics(Protocol):
    """The self-metric the actuator feeds (scaler.api.selfmetrics.SelfMetrics has it)."""

    def observe_scale_write(self, model: str, result: str) -> None:
        """Count one scale write for `model` by result (ok, conflict, error, timeout)."""


def headline_reason(decision: Decision) -> Reason | None:
    """The one Reason an event about `decision` is filed under."""
    for reason in _HEADLINE:
        if reason in decision.reasons:
            return reason
    return decision.reasons[0] if decision.reasons else None


def describe(decision: Decision, previous: int) -> str:
    """A readable sentence for an event note: what changed, why, on which values."""
    signals = ", ".join(f"{s.value}={v:g}" for s, v in sorted(decision.signals.items()))
    reasons = ", ".join(r.value for r in decision.reasons)
    return (
        f"scaler set {decision.model} from {previous} to {decision.desired_replicas} "
        f"replica(s) because: {reasons}"
        + (f"; signals {signals}" if signals else "; no signal data")
    )[:1024]


def needs_write(decision: Decision, policy: ModelPolicy, replicas: int) -> bool:
    """Whether scaler itself writes the scale for this decision (see module): zero crossings."""
    if not policy.on_demand or decision.desired_replicas == replicas:
        return False
    return replicas == 0 or decision.desired_replicas == 0


class Actuator:
    """Writes zero crossings of on-demand models and files events about them."""

    def __init__(
        self,
        *,
        api: KubernetesApi,
        metrics: ScaleWriteMetrics,
        identity: str,
        clock: Callable[[], float],
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._identity = identity
        self._clock = clock

    async def actuate(
        self, decision: Decision, policy: ModelPolicy, deployment: DeploymentView
    ) -> str | None:
        """Apply `decision` if scaler owns this change; the result (ok, unchanged, conflict,
        error, timeout, not_found), or None when there is nothing to write."""
        if not needs_write(decision, policy, deployment.replicas):
            return None
        result = await self._write(decision, policy, deployment)
        if result != "unchanged":
            self._metrics.observe_scale_write(policy.model, result)
        if result == "ok":
            await self._event(decision, policy, previous=deployment.replicas)
        return result

    async def _write(
        self, decision: Decision, policy: ModelPolicy, deployment: DeploymentView
    ) -> str:
        namespace, name = policy.target.namespace, policy.target.deployment
        desired = decision.desired_replicas
        resource_version = deployment.resource_version
        for attempt in (1, 2):
            try:
                written = await self._api.patch_scale(
                    namespace, name, desired, resource_version=resource_version
                )
            except KubernetesError as exc:
                if not exc.conflict:
                    _log.warning(
                        "scale_write_failed",
                        model=policy.model,
                        deployment=f"{namespace}/{name}",
                        desired=desired,
                        error=str(exc),
                        status=exc.status,
                        action="retrying on the next tick",
                    )
                    return exc.kind
                _log.info(
                    "scale_write_conflict",
                    model=policy.model,
                    deployment=f"{namespace}/{name}",
                    attempt=attempt,
                    action="re-reading the scale" if attempt == 1 else "retrying on the next tick",
                )
                if attempt == 2:
                    return "conflict"
                try:
                    scale = await self._api.read_scale(namespace, name)
                except KubernetesError as read_exc:
                    _log.warning("scale_read_failed", model=policy.model, error=str(read_exc))
                    return "conflict"
                if not needs_write(decision, policy, scale.replicas):
                    # Someone else already moved it; the next tick decides on the new count.
                    return "unchanged"
                resource_version = scale.resource_version
                continue
            _log.info(
                "scaled",
                model=policy.model,
                deployment=f"{namespace}/{name}",
                previous=deployment.replicas,
                replicas=written.replicas,
                reasons=[r.value for r in decision.reasons],
            )
            return "ok"
        raise AssertionError("unreachable")  # pragma: no cover

    async def _event(self, decision: Decision, policy: ModelPolicy, *, previous: int) -> None:
        reason = headline_reason(decision)
        event = EventRecord(
            namespace=policy.target.namespace,
            deployment=policy.target.deployment,
            reason=(reason or Reason.DEMAND).value,
            note=describe(decision, previous),
            action="ScaleFromZero" if previous == 0 else "ScaleToZero",
            time=self._clock(),
            reporting_instance=self._identity,
        )
        try:
            await self._api.create_event(event)
        except KubernetesError as exc:
            _log.warning("event_write_failed", model=policy.model, error=str(exc))
