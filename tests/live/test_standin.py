"""The Kubernetes API stand-in rejects what kube-apiserver rejects (so the adapter's passing
tests mean something): auth, schemas, conflicts, patch types, selectors."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.live.kube_standin import (
    TOKEN,
    KubeStandIn,
    StandInError,
    json_patch,
    merge_patch,
    selector_matches,
)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/scaler-system/leases"
EVENTS = "/apis/events.k8s.io/v1/namespaces/cortex/events"
DEPLOYMENT = "/apis/apps/v1/namespaces/cortex/deployments/mixtral-8x7b"
LEASE = {
    "apiVersion": "coordination.k8s.io/v1",
    "kind": "Lease",
    "metadata": {"name": "scaler"},
    "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
}


@pytest.fixture
async def http(standin: KubeStandIn) -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTPS session trusting the stand-in's CA, with the bearer token."""
    context = ssl.create_default_context(cafile=str(standin.ca_file))
    async with aiohttp.ClientSession(
        base_url=standin.url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        connector=aiohttp.TCPConnector(ssl=context),
    ) as session:
        yield session


async def send(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One request; (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body)
    async with http.request(
        method, path, data=data, headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json()


async def test_request_without_token_is_401(standin: KubeStandIn) -> None:
    """No bearer token: 401 Status."""
    context = ssl.create_default_context(cafile=str(standin.ca_file))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"{standin.url}{DEPLOYMENT}") as response,
    ):
        assert response.status == 401
        assert (await response.json())["kind"] == "Status"


async def test_unknown_field_in_a_lease_is_422(http: aiohttp.ClientSession) -> None:
    """The strict schema refuses a misspelt field, like the real server's strict decoding."""
    bad = {**LEASE, "spec": {"holderIdentty": "a"}}
    status, body = await send(http, "POST", LEASES, bad)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert "holderIdentty" in body["message"]


async def test_stale_resource_version_is_409(http: aiohttp.ClientSession) -> None:
    """A PUT carrying an old resourceVersion conflicts."""
    status, created = await send(http, "POST", LEASES, LEASE)
    assert status == 201
    update = {**created, "spec": {**created["spec"], "holderIdentity": "b"}}
    assert (await send(http, "PUT", f"{LEASES}/scaler", update))[0] == 200
    status, body = await send(http, "PUT", f"{LEASES}/scaler", update)  # same, now stale
    assert status == 409
    assert body["reason"] == "Conflict"


async def test_creating_an_existing_lease_is_409_already_exists(
    http: aiohttp.ClientSession,
) -> None:
    """A second POST of the same Lease is AlreadyExists."""
    await send(http, "POST", LEASES, LEASE)
    status, body = await send(http, "POST", LEASES, LEASE)
    assert (status, body["reason"]) == (409, "AlreadyExists")


async def test_negative_scale_is_422(http: aiohttp.ClientSession) -> None:
    """spec.replicas below zero is Invalid."""
    status, _ = await send(
        http,
        "PATCH",
        f"{DEPLOYMENT}/scale",
        {"spec": {"replicas": -1}},
        "application/merge-patch+json",
    )
    assert status == 422


async def test_json_patch_sets_an_annotation(
    http: aiohttp.ClientSession, standin: KubeStandIn
) -> None:
    """An RFC 6902 patch is applied to the stored Deployment."""
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"scaler.dev/state": "{}"}}]
    status, _ = await send(http, "PATCH", DEPLOYMENT, ops, "application/json-patch+json")
    assert status == 200
    annotations = standin.deployment("cortex", "mixtral-8x7b")["metadata"]["annotations"]
    assert annotations == {"scaler.dev/state": "{}"}


async def test_unsupported_patch_type_is_415(http: aiohttp.ClientSession) -> None:
    """A patch in an unknown media type is UnsupportedMediaType."""
    status, _ = await send(http, "PATCH", DEPLOYMENT, {"spec": {}}, "application/x-yaml")
    assert status == 415


async def test_bad_annotation_key_is_422(http: aiohttp.ClientSession) -> None:
    """Annotation keys must be qualified names."""
    patch = {"metadata": {"annotations": {"not a key!": "x"}}}
    status, _ = await send(http, "PATCH", DEPLOYMENT, patch, "application/merge-patch+json")
    assert status == 422


async def test_event_without_reporting_controller_is_422(http: aiohttp.ClientSession) -> None:
    """events.k8s.io/v1 requires reportingController (a server-side rule, not in the schema)."""
    event = {
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "action": "Scale",
        "reason": "ScaleFromZero",
        "reportingInstance": "scaler-a",
        "type": "Normal",
        "regarding": {"kind": "Deployment", "name": "mixtral-8x7b"},
    }
    status, body = await send(http, "POST", EVENTS, event)
    assert status == 422
    assert "reportingController" in body["message"]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("app=mixtral", True),
        ("app==mixtral,tier=gpu", False),
        ("app!=mixtral", False),
        ("app in (mixtral, tiny)", True),
        ("app notin (mixtral)", False),
        ("app", True),
        ("!app", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    """Equality- and set-based selectors, as the API server reads them."""
    assert selector_matches(selector, {"app": "mixtral"}) is matches


def test_merge_patch_null_deletes() -> None:
    """RFC 7386: null removes a key, maps merge."""
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"c": 4}}) == {
        "b": {"c": 4, "d": 3}
    }


def test_json_patch_test_op_failure_is_an_error() -> None:
    """A failing `test` operation rejects the whole patch."""
    with pytest.raises(StandInError, match="test failed"):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
