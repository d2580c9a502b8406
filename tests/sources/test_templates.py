"""Templates and the query plan: placeholders, both spellings, batching rules (pure, fast).

That each rendered query parses and returns the right numbers is checked against a real
Prometheus in tests/integration/test_prometheus_source.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from scaler import metric_names
from scaler.core import Engine, ModelPolicy, Signal
from scaler.sources.templates import (
    DEFAULT_TEMPLATES,
    PlannedQuery,
    check_window,
    plan_queries,
    render,
    unknown_placeholders,
)
from tests.builders import make_policy


def policy(
    model: str, engine: str = "vllm", namespace: str = "cortex", **changes: Any
) -> ModelPolicy:
    """A policy for `model` with the shipped convention of matchers."""
    return make_policy(
        "mistral-7b" if engine == "vllm" else "tinyllama",
        model=model,
        matchers=[f'namespace="{namespace}"', f'model="{model}"'],
        target={"namespace": namespace, "deployment": model},
        **changes,
    )


def queries_for(planned: tuple[PlannedQuery, ...], signal: Signal) -> list[PlannedQuery]:
    """The planned queries of one signal."""
    return [q for q in planned if q.signal is signal]


def test_render_substitutes_placeholders_and_keeps_promql_braces() -> None:
    """{matchers} etc. are replaced; PromQL selector braces around them stay."""
    query = render(
        "sum by ({model_label}) (rate(x{{matchers}}[{window}])) + y{{model_matchers}}",
        matchers='namespace="cortex",model="a"',
        model_matchers='model="a"',
        window="2m",
    )
    assert query == ('sum by (model) (rate(x{namespace="cortex",model="a"}[2m])) + y{model="a"}')


def test_render_rejects_unknown_placeholder() -> None:
    """A typo such as {matcher} is an error naming the placeholder, not a silent literal."""
    with pytest.raises(ValueError, match=r"unknown placeholder \{matcher\}"):
        render("x{{matcher}}", matchers="", model_matchers="", window="1m")
    assert unknown_placeholders('x{job="a"} + y{{matchers}}') == ()


@pytest.mark.parametrize("engine", list(Engine))
def test_every_default_template_accepts_both_spellings(engine: Engine) -> None:
    """Each engine metric name appears in its colon and its underscore spelling."""
    for signal, template in DEFAULT_TEMPLATES[engine].items():
        for part in filter(None, (template.value, template.freshness)):
            for name in re.findall(r"\b(?:vllm|llamacpp):[a-z_]+", part):
                assert name.replace(":", "_") in part, (signal, name)


@pytest.mark.parametrize("engine", list(Engine))
@pytest.mark.parametrize("signal", [Signal.QUEUE_DEPTH, Signal.INFLIGHT_REQUESTS])
def test_activator_pending_is_part_of_queue_and_inflight(engine: Engine, signal: Signal) -> None:
    """Held requests count toward queue depth and in-flight for every engine."""
    assert metric_names.ACTIVATOR_PENDING in DEFAULT_TEMPLATES[engine][signal].value


def test_shipped_policies_need_one_query_per_signal_per_engine() -> None:
    """The four shipped policies (1 vLLM, 3 llama.cpp): 8 queries, the llama.cpp ones batched."""
    policies = [
        make_policy(m) for m in ("mistral-7b", "tinyllama", "deepseek-coder", "mixtral-8x7b")
    ]
    planned = plan_queries(policies, window="1m")
    assert len(planned) == len(Signal) * len(Engine)
    llamacpp = [q for q in planned if q.engine is Engine.LLAMACPP]
    assert {q.models for q in llamacpp} == {("deepseek-coder", "mixtral-8x7b", "tinyllama")}
    assert all(q.batched for q in planned)
    assert all('model=~"deepseek-coder|mixtral-8x7b|tinyllama"' in q.query for q in llamacpp)


def test_query_count_does_not_grow_with_models() -> None:
    """1,000 policies of one engine still make one query per signal."""
    base = policy("m-0")
    # model_copy skips validation: building 1,000 policies from YAML would dominate the test.
    policies = [
        base.model_copy(
            update={"model": f"m-{i}", "matchers": ('namespace="cortex"', f'model="m-{i}"')}
        )
        for i in range(1000)
    ]
    planned = plan_queries(policies, window="1m")
    assert len(planned) == len(Signal)
    assert all(len(q.models) == 1000 for q in planned)


def test_different_non_model_matchers_split_the_batch() -> None:
    """Policies in two namespaces: one query per signal per namespace."""
    planned = plan_queries([policy("a"), policy("b"), policy("c", namespace="lab")], window="1m")
    queue = queries_for(planned, Signal.QUEUE_DEPTH)
    assert sorted(q.models for q in queue) == [("a", "b"), ("c",)]
    assert all(q.batched for q in queue)


def test_policy_without_own_model_matcher_is_queried_alone() -> None:
    """A policy selecting by model_name cannot be attributed by the model label: own query."""
    odd = make_policy("mistral-7b", matchers=['namespace="cortex"', 'model_name="mistral"'])
    planned = plan_queries([odd, policy("b")], window="1m")
    queue = queries_for(planned, Signal.QUEUE_DEPTH)
    alone = [q for q in queue if not q.batched]
    assert [q.models for q in alone] == [("mistral-7b",)]
    assert 'model_name="mistral"' in alone[0].query
    # The activator labels held requests with the policy name.
    assert 'scaler_activator_pending_requests{model="mistral-7b"}' in alone[0].query


def test_override_runs_per_policy_and_leaves_the_batch_for_others() -> None:
    """An overridden signal is one query for that policy; its other signals stay batched."""
    custom = policy("a", queries={"queue_depth": "max by ({model_label}) (q{{matchers}})"})
    planned = plan_queries([custom, policy("b")], window="1m")
    queue = queries_for(planned, Signal.QUEUE_DEPTH)
    assert sorted((q.models, q.batched) for q in queue) == [(("a",), False), (("b",), True)]
    override = next(q for q in queue if not q.batched)
    assert override.query == 'max by (model) (q{namespace="cortex",model="a"})'
    tokens = queries_for(planned, Signal.TOKENS_PER_SECOND)
    assert [q.models for q in tokens] == [("a", "b")]


def test_override_with_unknown_placeholder_is_planned_as_an_error() -> None:
    """A bad override does not break the plan: its query carries the error, others are fine."""
    bad = policy("a", queries={"queue_depth": "x{{matcher}}"})
    planned = plan_queries([bad, policy("b")], window="1m")
    errors = [q for q in planned if q.error is not None]
    assert len(errors) == 1
    assert "policy a: queries.queue_depth: unknown placeholder {matcher}" in (errors[0].error or "")
    assert len(planned) == len(Signal) + 1


@pytest.mark.parametrize("window", ["30s", "1m", "1m30s", "500ms", "2h"])
def test_valid_windows(window: str) -> None:
    """PromQL durations are accepted as rate windows."""
    assert check_window(window) == window


@pytest.mark.parametrize("window", ["", "1", "1 m", "m", "1m]", "-1m"])
def test_invalid_windows(window: str) -> None:
    """Anything else is refused before it reaches a query."""
    with pytest.raises(ValueError, match="invalid rate window"):
        check_window(window)
