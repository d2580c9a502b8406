"""PromQL templates per engine and signal, and the plan of batched queries for one tick.

A template is PromQL with placeholders, substituted literally (PromQL's own braces are left
alone, so no brace doubling is needed):

``{matchers}``
    the label matchers that select the models' series, comma-separated without braces, e.g.
    ``namespace="cortex",model=~"mistral-7b|tinyllama"``; use it inside a selector:
    ``{__name__="x",{matchers}}`` or ``x{{matchers}}``.
``{model_matchers}``
    only the model-label matcher, e.g. ``model=~"mistral-7b|tinyllama"``: for series exported
    by scaler's activator, which carry the model label but not the model pods' target labels.
``{window}``
    the rate window, e.g. ``1m`` (`PrometheusSource(window=...)`).
``{model_label}``
    the label that names the model (``model``); results are grouped by it.

Defaults (docs/metrics.md, "Prometheus queries"), each name matched in both spellings
(``{__name__=~"vllm:x|vllm_x"}``) because a prometheus_client >= 0.23 exporter scraped by
Prometheus 2.42 is stored with underscores (prometheus/client_python#1177). The llama.cpp
names are checked against a real ``llama-server --metrics``
(tests/integration/test_llamacpp_metrics.py), so an upstream rename fails a test:

- queue_depth: vLLM ``num_requests_waiting``; llama.cpp ``requests_deferred``; + pending;
- inflight_requests: vLLM ``num_requests_running`` + ``num_requests_waiting``; llama.cpp
  ``requests_processing`` + ``requests_deferred``; + pending;
- tokens_per_second: rate of vLLM ``generation_tokens_total``, llama.cpp
  ``tokens_predicted_total`` (llama-server adds a request's tokens when the request ends: a pod
  busy with long generations reads 0 until they end, and queue depth and in-flight carry it);
- request_rate: rate of vLLM ``request_success_total`` (all finished reasons); llama.cpp has
  no request counter: rate of the activator's ``scaler_activator_forwarded_total``.

"pending" is ``scaler_activator_pending_requests{model=...}``: requests the activator holds
for a model. It is added to queue depth and in-flight for every engine, which is how a
request held for a model at zero wakes it. Either side may have no series: with engine
series only, the engine's value; with the activator's only, its value, but only when the
model has no scrape target at all (``up``), i.e. is at zero; a model whose targets exist but
export nothing usable stays missing (see `_gauge_sum`).

llama.cpp has no request counter; its request rate is the activator's forwarded counter (the
activator is in the request path of on-demand and warm models alike: it sees every request
that reaches the model).

Every default query also returns, in one round trip, the newest sample timestamp per model
(``max by (model)(timestamp(<selector>))``, tagged ``scaler_series="sample_time"``; the value
is tagged ``scaler_series="value"``): staleness comes from sample timestamps, not from the
evaluation time an instant query stamps its results with.

Batching: for each engine and signal ONE query per tick selects every policy of that engine,
grouped ``by (model)``. Policies are batched together when each selects its own series with
``model="<policy name>"`` and their other matchers are the same; the batch's ``{matchers}``
are those common matchers plus ``model=~"a|b|..."``. Policies whose other matchers differ get
one query per distinct matcher set. A policy without a ``model="<its name>"`` matcher, and
every overridden template (`ModelPolicy.queries`), is queried on its own; all the series such
a query returns belong to that policy and are summed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from scaler.core import Engine, ModelPolicy, Signal
from scaler.metric_names import ACTIVATOR_FORWARDED, ACTIVATOR_PENDING, MODEL_LABEL

SERIES_LABEL: Final = "scaler_series"
"""Tags a default query's result series: ``value`` or ``sample_time``."""

PLACEHOLDERS: Final = ("matchers", "model_matchers", "window", "model_label")
"""The placeholders a template may use, each written ``{name}``."""

# A bare identifier in braces is never valid PromQL, so it can only be a placeholder.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class SignalTemplate:
    """How one signal is read: a `value` expression and, optionally, a `freshness` expression
    giving the newest sample timestamp per model (both templates, grouped by the model)."""

    value: str
    freshness: str | None = None


def _names(*names: str) -> str:
    """A ``__name__`` regex accepting each upstream name in its colon and underscore spelling."""
    spellings: list[str] = []
    for name in names:
        spellings.append(name)
        if ":" in name:
            spellings.append(name.replace(":", "_"))
    return "|".join(spellings)


def _gauge_sum(*names: str) -> SignalTemplate:
    """Sum of engine gauges plus the activator's pending count, per model.

    Three cases, joined with ``or`` so whichever applies answers: engine and activator series
    (their sum); engine series only (no activator); activator series only, and only for a
    model with no scrape target at all (scaled to zero). A model whose targets exist but
    whose engine series are gone (scrape failing, exporter broken) stays missing: the
    activator's 0 must not pass for a measured idle model, or a broken exporter could scale
    it down.
    """
    engine = f'sum by ({{model_label}}) ({{__name__=~"{_names(*names)}",{{matchers}}}})'
    pending = f"sum by ({{model_label}}) ({ACTIVATOR_PENDING}{{{{model_matchers}}}})"
    targets = "count by ({model_label}) (up{{matchers}})"
    # One name is enough for freshness (an engine exports its gauges together); two would
    # give timestamp() series differing only by name, which Prometheus refuses.
    first = f'{{__name__=~"{_names(names[0])}",{{matchers}}}}'
    return SignalTemplate(
        value=(
            f"({engine} + on ({{model_label}}) {pending})"
            f" or {engine}"
            f" or ({pending} unless on ({{model_label}}) {targets})"
        ),
        freshness=(
            f"max by ({{model_label}}) (timestamp({first})"
            f" or timestamp({ACTIVATOR_PENDING}{{{{model_matchers}}}}))"
        ),
    )


def _counter_rate(name: str) -> SignalTemplate:
    """Per-model rate of an engine counter, in both spellings."""
    selector = f'{{__name__=~"{_names(name)}",{{matchers}}}}'
    return SignalTemplate(
        value=f"sum by ({{model_label}}) (rate({selector}[{{window}}]))",
        freshness=f"max by ({{model_label}}) (timestamp({selector}))",
    )


def _activator_rate(name: str) -> SignalTemplate:
    """Per-model rate of an activator counter (selected by the model label only)."""
    selector = f"{name}{{{{model_matchers}}}}"
    return SignalTemplate(
        value=f"sum by ({{model_label}}) (rate({selector}[{{window}}]))",
        freshness=f"max by ({{model_label}}) (timestamp({selector}))",
    )


DEFAULT_TEMPLATES: Final[Mapping[Engine, Mapping[Signal, SignalTemplate]]] = {
    Engine.VLLM: {
        Signal.QUEUE_DEPTH: _gauge_sum("vllm:num_requests_waiting"),
        Signal.INFLIGHT_REQUESTS: _gauge_sum(
            "vllm:num_requests_running", "vllm:num_requests_waiting"
        ),
        Signal.TOKENS_PER_SECOND: _counter_rate("vllm:generation_tokens_total"),
        Signal.REQUEST_RATE: _counter_rate("vllm:request_success_total"),
    },
    Engine.LLAMACPP: {
        Signal.QUEUE_DEPTH: _gauge_sum("llamacpp:requests_deferred"),
        Signal.INFLIGHT_REQUESTS: _gauge_sum(
            "llamacpp:requests_processing", "llamacpp:requests_deferred"
        ),
        Signal.TOKENS_PER_SECOND: _counter_rate("llamacpp:tokens_predicted_total"),
        Signal.REQUEST_RATE: _activator_rate(ACTIVATOR_FORWARDED),
    },
}
"""The built-in templates per engine and signal (see the module docstring)."""


def unknown_placeholders(template: str) -> tuple[str, ...]:
    """The ``{name}`` placeholders in `template` that are not in PLACEHOLDERS."""
    return tuple(name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS)


def render(
    template: str,
    *,
    matchers: str,
    model_matchers: str,
    window: str,
    model_label: str = MODEL_LABEL,
) -> str:
    """Substitute the placeholders in `template`; pure. Raises ValueError on an unknown one."""
    unknown = unknown_placeholders(template)
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} in query template; use {known}")
    values = {
        "matchers": matchers,
        "model_matchers": model_matchers,
        "window": window,
        "model_label": model_label,
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render_combined(template: SignalTemplate, **placeholders: str) -> str:
    """One query returning the value and (if the template has one) the sample time per model,
    told apart by the SERIES_LABEL label; pure."""
    value = render(template.value, **placeholders)
    if template.freshness is None:
        return value
    freshness = render(template.freshness, **placeholders)
    # label_replace on __name__ with ".*" always matches, so it only adds the tag.
    return (
        f'label_replace({value}, "{SERIES_LABEL}", "value", "__name__", ".*")'
        f' or label_replace({freshness}, "{SERIES_LABEL}", "sample_time", "__name__", ".*")'
    )


def check_window(window: str) -> str:
    """Return `window` if it is a PromQL duration (``30s``, ``1m``, ``1m30s``); else ValueError."""
    if not _DURATION.match(window):
        raise ValueError(f"invalid rate window {window!r}; expected a PromQL duration like 1m")
    return window


@dataclass(frozen=True)
class Matcher:
    """A parsed label matcher."""

    name: str
    op: str
    value: str

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """Parse ``name="value"`` (operators ``=``, ``!=``, ``=~``, ``!~``); ValueError if malformed."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f"malformed label matcher {text!r}")
    return Matcher(found.group(1), found.group(2), found.group(3))


@dataclass(frozen=True)
class PlannedQuery:
    """One PromQL query of a tick and the policies (models) whose readings it yields.

    When `batched`, result series are attributed by their model label; otherwise the query
    serves the single model in `models` and all its series are summed for it. `error` is set
    (and `query` empty) when the query could not be rendered, e.g. an override with an
    unknown placeholder: the source reports it without sending anything.
    """

    signal: Signal
    engine: Engine
    query: str
    models: tuple[str, ...]
    batched: bool
    error: str | None = None


def plan_queries(
    policies: Sequence[ModelPolicy],
    *,
    window: str,
    model_label: str = MODEL_LABEL,
) -> tuple[PlannedQuery, ...]:
    """The queries of one tick: one per (engine, signal, matcher set), plus one per policy
    that overrides the signal or cannot be batched. Pure; never raises for a bad override."""
    planned: list[PlannedQuery] = []
    groups: dict[tuple[Engine, tuple[str, ...]], list[ModelPolicy]] = {}
    singles: list[ModelPolicy] = []
    for policy in policies:
        common = common_matchers(policy, model_label)
        if common is None:
            singles.append(policy)
        else:
            groups.setdefault((policy.engine, common), []).append(policy)

    for signal in Signal:
        alone = list(singles)
        for (engine, common), members in groups.items():
            batch = [p for p in members if signal.value not in p.queries]
            alone.extend(p for p in members if signal.value in p.queries)
            if batch:
                models = tuple(sorted({p.model for p in batch}))
                by_model = model_matcher(model_label, models)
                query = render_combined(
                    DEFAULT_TEMPLATES[engine][signal],
                    matchers=",".join((*common, by_model)),
                    model_matchers=by_model,
                    window=window,
                    model_label=model_label,
                )
                planned.append(PlannedQuery(signal, engine, query, models, batched=True))
        planned.extend(_plan_single(policy, signal, window, model_label) for policy in alone)
    return tuple(planned)


def _plan_single(
    policy: ModelPolicy, signal: Signal, window: str, model_label: str
) -> PlannedQuery:
    override = policy.queries.get(signal.value)
    template = (
        SignalTemplate(override)
        if override is not None
        else DEFAULT_TEMPLATES[policy.engine][signal]
    )
    try:
        query = render_combined(
            template,
            matchers=",".join(str(parse_matcher(m)) for m in policy.matchers),
            model_matchers=model_matcher(model_label, (policy.model,)),
            window=window,
            model_label=model_label,
        )
    except ValueError as exc:
        return PlannedQuery(
            signal,
            policy.engine,
            "",
            (policy.model,),
            batched=False,
            error=f"policy {policy.model}: queries.{signal.value}: {exc}",
        )
    return PlannedQuery(signal, policy.engine, query, (policy.model,), batched=False)


def common_matchers(policy: ModelPolicy, model_label: str) -> tuple[str, ...] | None:
    """The policy's matchers other than ``model="<its name>"``, normalised and sorted: policies
    with equal common matchers share a batched query. None when the policy has no such
    matcher (it cannot share a batch)."""
    parsed = [parse_matcher(m) for m in policy.matchers]
    own = Matcher(model_label, "=", policy.model)
    if own not in parsed or any(m.name == model_label and m != own for m in parsed):
        return None
    return tuple(sorted(str(m) for m in parsed if m != own))


def model_matcher(model_label: str, models: Sequence[str]) -> str:
    """The matcher selecting `models` (sorted, distinct) by `model_label`."""
    # Policy names are RFC 1123 labels ([a-z0-9-]): nothing to escape in a regex.
    if len(models) == 1:
        return f'{model_label}="{models[0]}"'
    return f'{model_label}=~"{"|".join(models)}"'
