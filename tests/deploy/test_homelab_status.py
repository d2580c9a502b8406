"""The Gatus endpoints and the Homepage widget parse as YAML, use only the keys their docs
define, and cover every model: its Service's /health, its state on /status, its Homepage line.
(Their conditions and fields against a running adapter: tests/dashboards/test_queries_adapter.)
"""

from __future__ import annotations

import pytest

from scaler.api.status import STATUS_PATH, StatusState
from scaler.core import ModelClass
from tests.deploy.homelab_configs import (
    GATUS_CLIENT_KEYS,
    GATUS_ENDPOINT_KEYS,
    GATUS_PLACEHOLDERS,
    GATUS_TOP_LEVEL,
    HOMEPAGE_DISPLAYS,
    HOMEPAGE_FORMATS,
    HOMEPAGE_MAPPING_KEYS,
    HOMEPAGE_SERVICE_KEYS,
    HOMEPAGE_WIDGET_KEYS,
    gatus_condition_holds,
    gatus_config,
    homepage_services,
    homepage_value,
    homepage_widgets,
    parse_condition,
)
from tests.deploy.objects import named, policies

STATUS_URL = f"https://scaler.scaler-system.svc{STATUS_PATH}"


def test_gatus_config_uses_documented_keys() -> None:
    """Top-level, endpoint and client keys are all Gatus' own; every endpoint has a name, a
    URL and conditions that parse, on documented placeholders."""
    config = gatus_config()
    assert set(config) <= GATUS_TOP_LEVEL
    assert config["endpoints"]
    for endpoint in config["endpoints"]:
        assert set(endpoint) <= GATUS_ENDPOINT_KEYS, endpoint["name"]
        assert set(endpoint.get("client", {})) <= GATUS_CLIENT_KEYS, endpoint["name"]
        assert endpoint["name"]
        assert endpoint["url"]
        assert endpoint["conditions"]
        for condition in endpoint["conditions"]:
            left, _, _ = parse_condition(condition)
            assert left.split(".")[0] in GATUS_PLACEHOLDERS, condition


def test_gatus_names_are_unique_per_group() -> None:
    """Gatus keys endpoints by group and name: a duplicate would hide one."""
    keys = [(e.get("group", ""), e["name"]) for e in gatus_config()["endpoints"]]
    assert len(keys) == len(set(keys))


def test_gatus_checks_every_model_through_its_service() -> None:
    """One /health endpoint per model, at the port its Service exposes."""
    urls = {e["url"] for e in gatus_config()["endpoints"]}
    for policy in policies().values():
        service = named("Service", policy.target.deployment, policy.target.namespace)
        port = service["spec"]["ports"][0]["port"]
        name = service["metadata"]["name"]
        assert f"http://{name}.{policy.target.namespace}.svc:{port}/health" in urls


def test_gatus_checks_every_model_state_on_status() -> None:
    """One /status endpoint per model on its state, and one on the overall status; an
    always-on model must be warm or scaling, the on-demand one may also be cold or waking."""
    on_status = [e for e in gatus_config()["endpoints"] if e["url"] == STATUS_URL]
    assert all(e["client"]["insecure"] is True for e in on_status)  # self-signed certificate
    conditions = [c for e in on_status for c in e["conditions"]]
    assert "[BODY].status == ok" in conditions
    for model, policy in policies().items():
        body = {"models": {model: {"state": ""}}}
        passing = set()
        for state in StatusState:
            body["models"][model]["state"] = state.value
            mine = [c for c in conditions if f".models.{model}." in c]
            assert mine, model
            if all(gatus_condition_holds(c, status=200, body=body) for c in mine):
                passing.add(state)
        expected = {StatusState.WARM, StatusState.SCALING}
        if policy.model_class is ModelClass.ON_DEMAND:
            expected |= {StatusState.WAKING, StatusState.COLD}
        assert passing == expected, model


def test_gatus_condition_evaluation_can_fail() -> None:
    """The evaluator the tests rely on rejects a wrong value, a missing path and a status."""
    body = {"status": "degraded", "ready": True}
    assert gatus_condition_holds("[BODY].ready == true", status=200, body=body)
    assert not gatus_condition_holds("[BODY].status == ok", status=200, body=body)
    assert not gatus_condition_holds("[BODY].models.x.state == warm", status=200, body=body)
    assert not gatus_condition_holds("[STATUS] == 200", status=503, body=body)
    with pytest.raises(ValueError, match="not a Gatus condition"):
        parse_condition("status is ok")


def test_homepage_snippet_uses_documented_keys() -> None:
    """A services.yaml list of groups of services; the customapi widget's keys, display,
    mappings and formats are the ones Homepage documents."""
    groups = homepage_services()
    assert isinstance(groups, list)
    for group in groups:
        (services,) = group.values()
        for entry in services:
            (service,) = entry.values()
            assert set(service) <= HOMEPAGE_SERVICE_KEYS
    widgets = homepage_widgets()
    assert widgets
    for widget in widgets:
        assert set(widget) <= HOMEPAGE_WIDGET_KEYS
        assert widget["type"] == "customapi"
        assert widget["url"] == STATUS_URL
        assert widget.get("display", "block") in HOMEPAGE_DISPLAYS
        for mapping in widget["mappings"]:
            assert set(mapping) <= HOMEPAGE_MAPPING_KEYS
            assert mapping.get("format", "text") in HOMEPAGE_FORMATS
            extra = mapping.get("additionalField", {})
            assert set(extra) <= {"field", "color", "format"}
            assert extra.get("format", "text") in HOMEPAGE_FORMATS


def test_homepage_shows_each_model_state_and_replicas_and_held_requests() -> None:
    """Per model a line with its state and ready/desired replicas; the held requests too."""
    (widget,) = homepage_widgets()
    document = {
        "heldRequests": 3,
        "models": {m: {"state": "warm", "replicas": "1/1"} for m in policies()},
    }
    fields = [homepage_value(m["field"], document) for m in widget["mappings"]]
    extras = [
        homepage_value(m["additionalField"]["field"], document)
        for m in widget["mappings"]
        if "additionalField" in m
    ]
    assert fields.count("warm") == len(policies())
    assert extras == ["1/1"] * len(policies())
    assert 3 in fields
    assert homepage_value({"models": {"nobody": "state"}}, document) is None
