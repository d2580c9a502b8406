"""/status: the states and the overall status, the document against its JSON Schema (the real
jsonschema validator), held requests, and that it is served without a client certificate."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from scaler.api.auth import Authenticator
from scaler.api.server import build_app
from scaler.api.status import (
    STATUS_SCHEMA,
    HeldRequests,
    OverallStatus,
    StatusPage,
    StatusState,
    model_state,
    overall_status,
)
from scaler.core import Decision, Reason
from tests.api.conftest import MODELS, STALENESS, START, Wiring, make_decision

VALIDATOR = jsonschema.Draft202012Validator(
    STATUS_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
CLASSES = {m: "on-demand" if m == "mixtral-8x7b" else "always-on" for m in MODELS}


def replicas(
    decision: Decision, *, desired: int, current: int, ready: int, reasons: tuple[Reason, ...]
) -> Decision:
    """`decision` with the replica counts and reasons replaced."""
    return dataclasses.replace(
        decision,
        desired_replicas=desired,
        current_replicas=current,
        ready_replicas=ready,
        starting_replicas=max(0, current - ready),
        reasons=reasons,
    )


BASE = make_decision()
D, SU, SD = Reason.DEMAND, Reason.SCALE_FROM_ZERO, Reason.SCALE_TO_ZERO
# (name, desired, current, ready, reasons, expected state)
CASES = [
    ("steady", 2, 2, 2, (D,), "warm"),
    ("scale up asked", 3, 2, 2, (D,), "scaling"),
    ("replica loading", 3, 3, 2, (D,), "scaling"),
    ("to zero", 0, 1, 1, (SD,), "scaling"),
    ("from zero", 1, 0, 0, (SU,), "waking"),
    ("first replica loading", 1, 1, 0, (D,), "waking"),
    ("asleep", 0, 0, 0, (Reason.IDLE_AT_ZERO,), "cold"),
    ("no room", 1, 1, 1, (D, Reason.PLACEMENT_CAP), "unplaceable"),
    ("no data", 2, 2, 2, (Reason.NO_DATA,), "no-data"),
    ("stale", 2, 2, 2, (Reason.STALE_DATA,), "no-data"),
    ("fallback", 3, 2, 2, (Reason.NO_DATA, Reason.FALLBACK), "no-data"),
]


@pytest.mark.parametrize(
    ("desired", "current", "ready", "reasons", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_state_follows_the_latest_decision(
    desired: int, current: int, ready: int, reasons: tuple[Reason, ...], expected: str
) -> None:
    """Each state comes out of the replica counts and reasons its docstring names."""
    latest = replicas(BASE, desired=desired, current=current, ready=ready, reasons=reasons)
    assert model_state(latest, BASE, fresh=True) is StatusState(expected)


def test_state_is_no_data_without_a_fresh_decision_on_data() -> None:
    """No decision, none on data, or the last one on data past the staleness limit: no-data."""
    assert model_state(None, None, fresh=False) is StatusState.NO_DATA
    assert model_state(BASE, None, fresh=False) is StatusState.NO_DATA
    assert model_state(BASE, BASE, fresh=False) is StatusState.NO_DATA


def test_overall_status() -> None:
    """down before readiness or when no model has data; degraded on no-data or unplaceable."""
    warm, cold = StatusState.WARM, StatusState.COLD
    assert overall_status({"a": warm, "b": cold}, ready=True) is OverallStatus.OK
    assert overall_status({"a": warm, "b": StatusState.WAKING}, ready=True) is OverallStatus.OK
    assert overall_status({"a": warm}, ready=False) is OverallStatus.DOWN
    assert overall_status({"a": StatusState.NO_DATA}, ready=True) is OverallStatus.DOWN
    for bad in (StatusState.NO_DATA, StatusState.UNPLACEABLE):
        assert overall_status({"a": warm, "b": bad}, ready=True) is OverallStatus.DEGRADED


def _document(page: StatusPage) -> Any:
    """The page's document as a test reads it (nested JSON values)."""
    return page.document()


def _page(wiring: Wiring, held: HeldRequests | None = None) -> StatusPage:
    return StatusPage(
        store=wiring.store,
        classes=CLASSES,
        held=held or HeldRequests(),
        ready=lambda: wiring.health.ready,
        clock=wiring.clock,
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The published schema is itself valid (checked against the meta-schema)."""
    jsonschema.Draft202012Validator.check_schema(STATUS_SCHEMA)


def test_document_is_valid_before_the_first_tick(wiring: Wiring) -> None:
    """Before any decision: every model no-data with null counts, overall down; still valid."""
    document = _document(_page(wiring))
    VALIDATOR.validate(document)
    assert document["status"] == "down"
    assert document["ready"] is False
    assert document["heldRequests"] is None
    assert {m["state"] for m in document["models"].values()} == {"no-data"}
    assert document["models"]["tinyllama"]["desiredReplicas"] is None


def test_document_reports_each_model(wiring: Wiring) -> None:
    """Published decisions show as states, counts, reasons, data age and held requests."""
    wiring.health.mark_ready()
    wiring.store.publish(make_decision("tinyllama", desired=1, current=1))
    wiring.store.publish(make_decision("mistral-7b", desired=3, current=2))
    wiring.store.publish(make_decision("deepseek-coder", desired=1, current=1))
    asleep = make_decision("mixtral-8x7b", desired=0, current=0, reasons=(Reason.IDLE_AT_ZERO,))
    wiring.store.publish(asleep)
    held = HeldRequests()
    held.record({"mixtral-8x7b": 2.0, "tinyllama": 0.0}, START)
    wiring.clock.now = START + 4.5
    document = _document(_page(wiring, held))
    VALIDATOR.validate(document)
    assert document["status"] == "ok"
    assert document["heldRequests"] == 2
    assert document["states"] == {
        "warm": 2,
        "scaling": 1,
        "waking": 0,
        "cold": 1,
        "unplaceable": 0,
        "no-data": 0,
    }
    mistral = document["models"]["mistral-7b"]
    assert mistral == {
        "class": "always-on",
        "state": "scaling",
        "replicas": "2/3",
        "desiredReplicas": 3,
        "currentReplicas": 2,
        "readyReplicas": 2,
        "startingReplicas": 0,
        "reasons": ["Demand"],
        "decidedAt": "2026-09-21T14:13:20Z",
        "dataAgeSeconds": 4.5,
        "heldRequests": None,  # the activator exported nothing for it
    }
    mixtral = document["models"]["mixtral-8x7b"]
    assert (mixtral["class"], mixtral["state"], mixtral["heldRequests"]) == ("on-demand", "cold", 2)
    assert document["models"]["tinyllama"]["heldRequests"] == 0


def test_stale_models_turn_no_data_and_degrade_then_down(wiring: Wiring) -> None:
    """Past the staleness limit a model is no-data (as the API's 503), held counts unknown."""
    wiring.health.mark_ready()
    for model in MODELS:
        wiring.store.publish(make_decision(model, desired=1, current=1))
    held = HeldRequests()
    held.record(dict.fromkeys(MODELS, 1.0), START)
    wiring.clock.now = START + STALENESS + 1
    # One model keeps deciding on data; the others' last decisions on data grow old.
    wiring.store.publish(make_decision("tinyllama", time=wiring.clock.now, desired=1, current=1))
    document = _document(_page(wiring, held))
    VALIDATOR.validate(document)
    assert document["status"] == "degraded"
    assert document["models"]["tinyllama"]["state"] == "warm"
    assert document["models"]["mistral-7b"]["state"] == "no-data"
    assert document["models"]["mistral-7b"]["dataAgeSeconds"] == STALENESS + 1
    assert document["heldRequests"] is None  # the held read is as old
    wiring.clock.now += STALENESS + 1
    assert _document(_page(wiring, held))["status"] == "down"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("status",), "fine"),
        (("models", "tinyllama", "state"), "asleep"),
        (("models", "tinyllama", "heldRequests"), -1),
        (("models", "tinyllama", "reasons"), ["Because"]),
        (("models", "tinyllama", "replicas"), "one of one"),
        (("states", "sleeping"), 1),
    ],
)
def test_schema_rejects_what_the_endpoint_never_writes(
    wiring: Wiring, path: tuple[str, ...], value: object
) -> None:
    """The schema is strict enough to catch a wrong value or an unknown key."""
    wiring.store.publish(make_decision("tinyllama", desired=1, current=1))
    document = _document(_page(wiring))
    broken = copy.deepcopy(document)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    VALIDATOR.validate(document)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(broken)


async def test_status_is_served_without_a_client_certificate(
    wiring: Wiring, aiohttp_client: Any
) -> None:
    """Without anonymous access, /status answers (Gatus has no front-proxy certificate) while
    the external metrics API refuses the same caller."""
    wiring.store.publish(make_decision("tinyllama", desired=1, current=1))
    app: web.Application = build_app(
        store=wiring.store,
        metrics=wiring.metrics,
        health=wiring.health,
        authenticator=Authenticator(allow_anonymous=False),
        clock=wiring.clock,
        status=_page(wiring),
    )
    client = await aiohttp_client(app)
    response = await client.get("/status")
    assert response.status == 200
    assert response.content_type == "application/json"
    VALIDATOR.validate(await response.json())
    refused = await client.get("/apis/external.metrics.k8s.io/v1beta1")
    assert refused.status == 401
    assert (await client.post("/status")).status == 405


async def test_status_is_not_served_without_a_page(wiring: Wiring, aiohttp_client: Any) -> None:
    """build_app without `status` has no /status route (404 Status)."""
    client = await aiohttp_client(wiring.app())
    assert (await client.get("/status")).status == 404
