"""Answers rendered at publish: the HPA's question is a lookup, with the general path's bytes.

For every metric and model, ``model=<name>`` (served from the body the store rendered) and
the same question put another way (``model==<name>``, ``model in (<name>)``, which the
general selector path parses and renders) give identical status, headers and body: fresh,
after a decision without data, under the fallback, past the staleness limit, and outside the
model's namespace.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from scaler import metric_names as names
from scaler.api.store import DecisionStore
from scaler.core import Reason, Signal
from tests.api.conftest import MODELS, STALENESS, START, Wiring, make_decision

Client = TestClient[web.Request, web.Application]
BASE = "/apis/external.metrics.k8s.io/v1beta1"
EVERY_SIGNAL = {
    Signal.QUEUE_DEPTH: 1.5,
    Signal.TOKENS_PER_SECOND: 120.25,
    Signal.REQUEST_RATE: 0.0004,
    Signal.INFLIGHT_REQUESTS: 3.0,
}


async def answer(client: Client, namespace: str, metric: str, selector: str) -> tuple[Any, ...]:
    """Status, content type and body bytes of one value-list request."""
    path = f"{BASE}/namespaces/{namespace}/{metric}?labelSelector={quote(selector, safe='')}"
    response = await client.get(path)
    return response.status, response.content_type, await response.read()


async def assert_same_everywhere(client: Client, namespace: str = "cortex") -> set[int]:
    """The lookup and the general path agree for every metric and model; returns statuses."""
    statuses = set()
    for metric in names.EXTERNAL_METRICS:
        for model in MODELS:
            plain = f"model={model}"
            looked_up = await answer(client, namespace, metric, plain)
            for general in (f"model=={model}", f"model in ({model})"):
                status, content_type, body = await answer(client, namespace, metric, general)
                # A 404 quotes the selector it was asked with; the rest must be identical.
                body = body.replace(repr(general).encode(), repr(plain).encode())
                assert (status, content_type, body) == looked_up, (metric, model, general)
            statuses.add(looked_up[0])
    return statuses


@pytest.fixture
async def client(wiring: Wiring, aiohttp_client: Any) -> Client:
    """A client of the app; the test publishes."""
    result: Client = await aiohttp_client(wiring.app())
    return result


async def test_fresh_answers_are_the_general_paths_bytes(wiring: Wiring, client: Client) -> None:
    """Every metric of every model, values fractional, tiny and whole."""
    for i, model in enumerate(MODELS):
        wiring.store.publish(make_decision(model, desired=i, signals=EVERY_SIGNAL))
    assert await assert_same_everywhere(client) == {200}


async def test_answers_after_a_decision_without_data(wiring: Wiring, client: Client) -> None:
    """A no-data decision: desired replicas from it, signals still from the last good one."""
    for model in MODELS:
        wiring.store.publish(make_decision(model, signals=EVERY_SIGNAL))
        wiring.store.publish(
            make_decision(
                model, time=START + 5, desired=4, signals={}, demand=None, reasons=(Reason.NO_DATA,)
            )
        )
    wiring.clock.now = START + 5
    assert await assert_same_everywhere(client) == {200}


async def test_answers_under_the_fallback_past_the_limit(wiring: Wiring, client: Client) -> None:
    """Past the staleness limit the fallback's desired replicas are served, signals are 503."""
    late = START + STALENESS * 3
    for model in MODELS:
        wiring.store.publish(make_decision(model, signals=EVERY_SIGNAL))
        wiring.store.publish(
            make_decision(model, time=late, desired=2, demand=None, reasons=(Reason.FALLBACK,))
        )
    wiring.clock.now = late
    assert await assert_same_everywhere(client) == {200, 503}


async def test_stale_and_unread_answers(wiring: Wiring, client: Client) -> None:
    """A model never published, a signal never read and a stale value: the same 503s."""
    wiring.store.publish(make_decision("mistral-7b", signals={Signal.QUEUE_DEPTH: 1.0}))
    wiring.store.publish(make_decision("tinyllama", time=START - STALENESS))
    wiring.clock.now = START + 1
    assert await assert_same_everywhere(client) == {200, 503}


async def test_a_rendered_answer_turns_stale_at_the_limit(wiring: Wiring, client: Client) -> None:
    """At exactly the limit the rendered body is served; just after, the general 503."""
    wiring.store.publish(make_decision())
    queue = names.EXTERNAL_BY_SIGNAL[Signal.QUEUE_DEPTH]
    wiring.clock.now = START + STALENESS
    assert (await answer(client, "cortex", queue, "model=mistral-7b"))[0] == 200
    wiring.clock.now = START + STALENESS + 0.001
    assert (await answer(client, "cortex", queue, "model=mistral-7b"))[0] == 503


async def test_outside_the_namespace_is_the_same_404(wiring: Wiring, client: Client) -> None:
    """A rendered answer is not served in another namespace: the general path's 404."""
    for model in MODELS:
        wiring.store.publish(make_decision(model))
    assert await assert_same_everywhere(client, namespace="default") == {404}


async def test_upper_case_metric_is_the_same_answer(wiring: Wiring, client: Client) -> None:
    """The metric name is lowercased before the lookup, as on the general path."""
    wiring.store.publish(make_decision())
    upper = await answer(client, "cortex", "Scaler-Desired-Replicas", "model=mistral-7b")
    assert upper == await answer(
        client, "cortex", "Scaler-Desired-Replicas", "model in (mistral-7b)"
    )
    assert upper[0] == 200


async def test_a_model_name_that_is_no_label_value_is_never_looked_up(
    aiohttp_client: Any,
) -> None:
    """A policy name the selector grammar refuses gets the general path's 400, not a body."""
    wiring = Wiring(store=DecisionStore(["bad name"], staleness_seconds=STALENESS))
    wiring.store.publish(make_decision("bad name"))
    client: Client = await aiohttp_client(wiring.app(namespaces=None))
    status, _, _ = await answer(client, "cortex", names.EXTERNAL_DESIRED_REPLICAS, "model=bad name")
    assert status == 400


async def test_the_hpas_question_reads_no_value_per_request(
    wiring: Wiring, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model=<name> is answered from the rendered body: the per-request value read is unused."""
    wiring.store.publish(make_decision(desired=3))

    def unused(*_args: object) -> None:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(wiring.store, "value", unused)
    status, _, body = await answer(
        client, "cortex", names.EXTERNAL_DESIRED_REPLICAS, "model=mistral-7b"
    )
    assert (status, b'"value":"3"' in body) == (200, True)


async def raw_answer(client: Client, namespace: str, metric: str, query: str) -> tuple[Any, ...]:
    """Status, content type and body of a value-list request with `query` sent as it is."""
    response = await client.get(
        URL(f"{BASE}/namespaces/{namespace}/{metric}?{query}", encoded=True)
    )
    return response.status, response.content_type, await response.read()


@pytest.mark.parametrize(
    "query",
    [
        "labelSelector=model%3Dmistral-7b",  # client-go's escaping: looked up as sent
        "labelSelector=model=mistral-7b",  # unescaped: looked up too
        "labelSelector=model%3dmistral-7b",  # lowercase hex: parsed
        "labelSelector=model%3Dmistral%2D7b",  # escaped beyond need: parsed
        "labelSelector=model%3Dmistral-7b&limit=1",  # another parameter: parsed
        "limit=1&labelSelector=model%3Dmistral-7b",
    ],
)
async def test_the_question_in_any_spelling_is_the_same_answer(
    wiring: Wiring, client: Client, query: str
) -> None:
    """However the query string spells model=<name>, the bytes are the general path's."""
    wiring.store.publish(make_decision(signals=EVERY_SIGNAL))
    for metric in names.EXTERNAL_METRICS:
        general = await answer(client, "cortex", metric, "model in (mistral-7b)")
        assert await raw_answer(client, "cortex", metric, query) == general, metric
        assert general[0] == 200


async def test_namespaces_with_and_without_routes_of_their_own(aiohttp_client: Any) -> None:
    """Models spread over two namespaces (each served by routes of its own) answer as with
    no namespace routes at all, in their namespace and outside it."""
    wiring = Wiring()
    spread = {model: ("cortex" if i % 2 else "llm") for i, model in enumerate(MODELS)}
    for model in MODELS:
        wiring.store.publish(make_decision(model, signals=EVERY_SIGNAL))
    client: Client = await aiohttp_client(wiring.app(namespaces=spread))
    everywhere: Client = await aiohttp_client(wiring.app(namespaces=None))
    for namespace in ("cortex", "llm", "default"):
        await assert_same_everywhere(client, namespace=namespace)
        for metric in names.EXTERNAL_METRICS:
            for model in MODELS:
                ours = await answer(client, namespace, metric, f"model={model}")
                served_here = spread[model] == namespace
                if served_here:
                    assert ours == await answer(everywhere, namespace, metric, f"model={model}")
                else:
                    assert ours[0] == 404
