"""Behaviour of the HPA emulator over several syncs, beyond the upstream cases."""

from __future__ import annotations

import pytest

from scaler.simulation.hpa import (
    HpaBehavior,
    HpaEmulator,
    HpaSpec,
    MetricTarget,
    PartialScalingRules,
)

PER_REPLICA = MetricTarget("AverageValue", 1000)  # one replica per unit of the signal


def _hpa(**spec: object) -> HpaEmulator:
    fields: dict[str, object] = {"max_replicas": 20, "metrics": (PER_REPLICA,)}
    fields.update(spec)
    return HpaEmulator(HpaSpec(**fields))  # type: ignore[arg-type]


def test_invalid_metric_never_scales_down() -> None:
    """With one metric failing, a lower proposal from the other holds the count."""
    hpa = _hpa(metrics=(PER_REPLICA, PER_REPLICA), downscale_stabilization_seconds=0)
    sync = hpa.sync(now=0, spec_replicas=6, status_replicas=6, ready_pods=6, usages=[None, 2000])
    assert (sync.desired_replicas, sync.rescaled, sync.reason) == (
        6,
        False,
        "FailedGetExternalMetric",
    )
    assert sync.event == "FailedComputeMetricsReplicas"


def test_invalid_metric_still_allows_scale_up() -> None:
    """With one metric failing, a higher proposal from the other still scales up."""
    hpa = _hpa(metrics=(PER_REPLICA, PER_REPLICA))
    sync = hpa.sync(now=0, spec_replicas=3, status_replicas=3, ready_pods=3, usages=[None, 5000])
    assert (sync.desired_replicas, sync.reason) == (5, "ValidMetricFound")


def test_error_sync_stores_no_recommendation() -> None:
    """A sync that fails on metrics returns before normalisation and records nothing."""
    hpa = _hpa()
    hpa.sync(now=0, spec_replicas=3, status_replicas=3, ready_pods=3, usages=[None])
    assert [r.replicas for r in hpa.state.recommendations] == [3]  # the initial one only


def test_from_zero_first_step_at_most_four_legacy() -> None:
    """minReplicas 0 at 0 replicas: the legacy cap max(2·0, 4) allows 4 pods at first."""
    hpa = _hpa(min_replicas=0)
    sync = hpa.sync(now=0, spec_replicas=0, status_replicas=0, ready_pods=0, usages=[9000])
    assert sync.desired_replicas == 4
    sync = hpa.sync(now=15, spec_replicas=4, status_replicas=4, ready_pods=0, usages=[9000])
    assert sync.desired_replicas == 8


def test_from_zero_first_step_at_most_four_with_default_behavior() -> None:
    """With a defaulted behavior, Pods 4 / 15 s is the only policy that moves from 0."""
    hpa = _hpa(min_replicas=0, behavior=HpaBehavior.defaulted())
    sync = hpa.sync(now=0, spec_replicas=0, status_replicas=0, ready_pods=0, usages=[9000])
    assert sync.desired_replicas == 4


def test_behavior_scale_events_limit_within_period() -> None:
    """Default scale-up allows max(+4, ×2) per 15 s: a second sync inside 15 s adds nothing."""
    hpa = _hpa(max_replicas=100, behavior=HpaBehavior.defaulted())
    first = hpa.sync(now=0, spec_replicas=10, status_replicas=10, ready_pods=10, usages=[50000])
    assert first.desired_replicas == 20
    second = hpa.sync(now=10, spec_replicas=20, status_replicas=20, ready_pods=10, usages=[50000])
    assert (second.desired_replicas, second.limit_reason) == (20, "ScaleUpLimit")
    third = hpa.sync(now=16, spec_replicas=20, status_replicas=20, ready_pods=10, usages=[50000])
    assert third.desired_replicas == 40


def test_legacy_window_holds_300_seconds() -> None:
    """Legacy normalisation keeps the highest recommendation of the last 300 s."""
    hpa = _hpa()
    hpa.sync(now=0, spec_replicas=5, status_replicas=5, ready_pods=5, usages=[5000])
    held = [
        hpa.sync(now=t, spec_replicas=5, status_replicas=5, ready_pods=5, usages=[1000])
        for t in range(15, 301, 15)
    ]
    assert all(s.desired_replicas == 5 and not s.rescaled for s in held)
    after = hpa.sync(now=315, spec_replicas=5, status_replicas=5, ready_pods=5, usages=[1000])
    assert (after.desired_replicas, after.rescaled) == (1, True)


def test_first_sync_recommendation_holds_a_new_hpa() -> None:
    """A fresh HPA does not drop replicas at once: its first sync's count is remembered."""
    hpa = _hpa()
    sync = hpa.sync(now=0, spec_replicas=5, status_replicas=5, ready_pods=5, usages=[1000])
    assert sync.desired_replicas == 5


def test_scaling_disabled_at_zero_with_min_one() -> None:
    """At 0 replicas with minReplicas 1 the HPA reads no metric and stays at 0."""
    hpa = _hpa()
    sync = hpa.sync(now=0, spec_replicas=0, status_replicas=0, ready_pods=0, usages=[99000])
    assert (sync.desired_replicas, sync.rescaled, sync.reason) == (0, False, "ScalingDisabled")


def test_value_target_counts_ready_pods_only() -> None:
    """A Value target multiplies the ratio by ready pods, so starting pods lower it."""
    hpa = _hpa(metrics=(MetricTarget("Value", 1000),))
    up = hpa.sync(now=0, spec_replicas=2, status_replicas=2, ready_pods=1, usages=[3000])
    assert up.desired_replicas == 3  # ceil(3 × 1 ready), not ceil(3 × 2)


def test_behavior_tolerance_per_direction() -> None:
    """A scale-up tolerance from the behavior replaces the cluster 0.1 for that direction."""
    behavior = HpaBehavior.defaulted(scale_up=PartialScalingRules(tolerance=0.01))
    hpa = _hpa(behavior=behavior)
    sync = hpa.sync(now=0, spec_replicas=10, status_replicas=10, ready_pods=10, usages=[10500])
    assert sync.desired_replicas == 11


def test_usage_count_must_match_metrics() -> None:
    """A sync with the wrong number of usages is refused with a clear error."""
    with pytest.raises(ValueError, match="2 usages for 1 metrics"):
        _hpa().sync(now=0, spec_replicas=1, status_replicas=1, ready_pods=1, usages=[1, 2])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_replicas": 0}, "maxReplicas"),
        ({"min_replicas": 30}, "minReplicas"),
        ({"tolerance": -1}, "tolerance"),
    ],
)
def test_spec_rejects_bad_values(fields: dict[str, object], message: str) -> None:
    """Out-of-range spec fields are named in the error."""
    with pytest.raises(ValueError, match=message):
        _hpa(**fields)


def test_metric_target_must_be_positive() -> None:
    """A zero target is rejected, as API validation does."""
    with pytest.raises(ValueError, match="must be positive"):
        MetricTarget("AverageValue", 0)
