"""Every case of hpa_cases.json (upstream HPA tests restated) through the emulator.

Each case is one test, named by its id. Cases that yield a replica count go through
``evaluate_case``; the other stages (defaults, event bookkeeping, policy limits) go through
the public functions they exercise, and every other `expect` field is checked too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaler.simulation.hpa import (
    HpaScalingRules,
    PartialScalingRules,
    behavior_case_limit,
    behavior_case_rate_limit,
    behavior_case_stabilize,
    behavior_case_sync,
    calculator_case_usage,
    case_events,
    case_partial_rules,
    case_policy,
    case_rules,
    controller_case_sync,
    evaluate_case,
    legacy_case_convert,
    legacy_case_stabilize,
    legacy_case_sync,
    replicas_changed_within,
    resolve_scale_down_rules,
    resolve_scale_up_rules,
    store_scale_event,
)

# The cases of kubernetes/kubernetes' own HPA tests (replica_calculator_test.go,
# horizontal_test.go, defaults_test.go), restated as inputs and expected outputs; the file's
# "source" says which revisions.
CASES_FILE = Path(__file__).with_name("hpa_cases.json")
_CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]


def _stage(case: dict[str, Any]) -> str:
    return str(case["input"].get("stage") or case["input"].get("level"))


def _resolved(rules: HpaScalingRules) -> dict[str, Any]:
    return {
        "stabilization_window_seconds": rules.stabilization_window_seconds,
        "select_policy": rules.select_policy,
        "policies": [
            {"type": p.type, "value": p.value, "period_seconds": p.period_seconds}
            for p in rules.policies
        ],
    }


def _check_defaults(data: dict[str, Any], expect: dict[str, Any]) -> None:
    given: PartialScalingRules | None = case_partial_rules(data["rules"])
    resolve = (
        resolve_scale_up_rules if data["direction"] == "scale_up" else resolve_scale_down_rules
    )
    assert _resolved(resolve(given)) == expect["resolved_rules"]


def _check_store_events(data: dict[str, Any], expect: dict[str, Any]) -> None:
    previous = case_events(data["previous_events"])
    assert (
        replicas_changed_within(previous, now=0.0, period_seconds=60)
        == expect["replicas_change_last_60s"]
    )
    stored = store_scale_event(
        previous,
        now=0.0,
        replica_change=data["new_replica_change"],
        rules=case_rules(data["rules"]),
    )
    assert [{"replica_change": e.replica_change, "outdated": e.outdated} for e in stored] == expect[
        "events_after"
    ]


@pytest.mark.parametrize("case", _CASES, ids=[c["id"] for c in _CASES])
def test_case(case: dict[str, Any]) -> None:
    """The emulator reproduces what the upstream test asserts for this case."""
    data, expect = case["input"], case["expect"]
    stage = _stage(case)
    if expect["desired_replicas"] is not None:
        assert evaluate_case(case) == expect["desired_replicas"]
    else:
        with pytest.raises(ValueError, match="no replica count"):
            evaluate_case(case)

    if case["kind"] in ("external_value", "external_average_value"):
        if stage == "calculator":
            assert calculator_case_usage(case) == expect["usage_milli"]
        else:
            sync = controller_case_sync(case)
            assert sync.rescaled == expect["scaled"]
            failed = sync.reason == "FailedGetExternalMetric"
            assert failed == bool(expect.get("metrics_error", False))
            assert (sync.event == "FailedComputeMetricsReplicas") == failed
    elif case["kind"] == "legacy":
        if stage == "stabilize":
            _, log = legacy_case_stabilize(data)
            assert len(log) == expect["recommendations_log_length"]
        elif stage == "convert":
            assert legacy_case_convert(data)[1] == expect["condition"]
        else:
            assert legacy_case_sync(data).rescaled == expect["scaled"]
    elif stage == "rate_limit":
        assert behavior_case_rate_limit(data)[1] == expect["condition"]
    elif stage == "full":
        assert behavior_case_sync(data).limit_reason == expect["condition"]
    elif stage == "stabilize":
        _, log = behavior_case_stabilize(data)
        if "recommendations_after" in expect:
            assert [r.replicas for r in log] == expect["recommendations_after"]
    elif stage in ("scale_up_limit", "scale_down_limit"):
        assert behavior_case_limit(data) == expect["limit_replicas"]
    elif stage == "defaults":
        _check_defaults(data, expect)
    elif stage == "store_events":
        _check_store_events(data, expect)
    else:
        pytest.fail(f"case {case['id']}: stage {stage!r} not covered")


def test_every_case_policy_parses() -> None:
    """Every policy object in the file is a valid HpaPolicy (guards the case parser)."""
    count = 0
    for case in _CASES:
        behavior = case["input"].get("behavior") or {}
        for rules in behavior.values():
            for policy in (rules or {}).get("policies") or []:
                assert case_policy(policy).period_seconds >= 1
                count += 1
    assert count > 0
