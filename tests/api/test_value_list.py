"""value_list: the rendered ExternalMetricValueList is json.dumps of the document, byte for byte."""

from __future__ import annotations

import json

import pytest

from scaler.api.value_list import render_answer, render_item, render_value_list
from tests.api.conftest import START


def reference(items: list[tuple[str, str, str, str]]) -> bytes:
    """The document built as a dict and encoded the way the server encoded it before."""
    document = {
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [
            {
                "metricName": metric,
                "metricLabels": {"model": model},
                "timestamp": timestamp,
                "value": value,
            }
            for metric, model, timestamp, value in items
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "model", ["mistral-7b", "model-0500", 'quote"back\\slash', "ünïcode", "tab\there"]
)
def test_one_item_matches_json_dumps(model: str) -> None:
    """Any model name, escaped as json.dumps escapes it (ASCII only)."""
    rendered = render_value_list([render_item("scaler-queue-depth", model, 1.5, START)])
    assert rendered == reference([("scaler-queue-depth", model, "2026-09-21T14:13:20Z", "1500m")])


def test_several_items_keep_their_order() -> None:
    """Items are joined in the order given, as a list in the document."""
    items = [render_item("scaler-desired-replicas", m, 2000.0, START + 1) for m in ("b", "a")]
    assert render_value_list(items) == reference(
        [("scaler-desired-replicas", m, "2026-09-21T14:13:21Z", "2k") for m in ("b", "a")]
    )


def test_no_items_is_an_empty_list() -> None:
    """The renderer does not refuse an empty list (the server never sends one: it is a 404)."""
    assert render_value_list([]) == reference([])


@pytest.mark.parametrize("value", [0.0, 2.0, 1.5, 0.0004, 120.25, 2e6, 1e300, -0.5])
@pytest.mark.parametrize("model", ["mistral-7b", 'quote"back\\slash', "ünïcode"])
def test_a_rendered_answer_is_the_one_item_list(model: str, value: float) -> None:
    """render_answer (the store's, with its cached parts) gives render_value_list's bytes."""
    for timestamp in (START, START + 1.5, START + 3600):
        for metric in ("scaler-desired-replicas", "scaler-queue-depth"):
            expected = render_value_list([render_item(metric, model, value, timestamp)])
            assert render_answer(metric, model, value, timestamp) == expected
