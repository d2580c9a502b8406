"""Cluster mode with the official kubernetes client: EndpointSlice watch and scale-on-wake.

No API server can run here, so a small loopback stand-in serves the two REST paths the
activator uses, with the wire format of the real ones: EndpointSlice list and watch (JSON
lines) and the Deployment scale subresource (GET, merge PATCH).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client as k8s
from structlog.testing import capture_logs
from yarl import URL

from scaler.activator.endpoints import EndpointSliceWatch, EndpointTracker, slice_readiness
from scaler.activator.proxy import serving
from scaler.activator.routes import build_routes
from scaler.activator.wake import DeploymentWaker
from tests.activator.model_server import ModelServerEmulator, running_activator, until
from tests.builders import make_policy

JsonObject = dict[str, Any]


def endpoint_slice(name: str, service: str, ready: list[bool | None]) -> JsonObject:
    """An EndpointSlice of `service` with one endpoint per entry (None: condition unset)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "cortex",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [f"10.0.0.{i + 1}"], "conditions": {} if r is None else {"ready": r}}
            for i, r in enumerate(ready)
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


@dataclass
class ApiStandIn:
    """The EndpointSlice and scale endpoints of kube-apiserver, on loopback, over HTTP."""

    slices: dict[str, JsonObject] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # deployment -> spec.replicas
    forbidden: bool = False
    requests: list[str] = field(default_factory=list)  # "VERB path?query"
    patches: list[JsonObject] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)  # labelSelector of each slice request
    events: asyncio.Queue[JsonObject | None] = field(default_factory=asyncio.Queue)

    def app(self) -> web.Application:
        app = web.Application()
        base = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        app.router.add_get(base, self._slices)
        scale = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
        app.router.add_get(scale, self._get_scale)
        app.router.add_patch(scale, self._patch_scale)
        return app

    def api_client(self, url: URL) -> Any:
        configuration = k8s.Configuration(host=str(url))
        return k8s.ApiClient(configuration)

    def watching(self) -> bool:
        return any("watch=true" in r for r in self.requests)

    async def _slices(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"GET {request.path_qs}")
        self.selectors.append(request.query.get("labelSelector", ""))
        if request.query.get("watch") != "true":
            return web.json_response(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": "1"},
                    "items": list(self.slices.values()),
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        while (event := await self.events.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    def _scale(self, request: web.Request) -> JsonObject:
        name = request.match_info["name"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": request.match_info["ns"]},
            "spec": {"replicas": self.replicas[name]},
            "status": {"replicas": self.replicas[name]},
        }

    def _refusal(self) -> web.Response:
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403},
            status=403,
        )

    async def _get_scale(self, request: web.Request) -> web.Response:
        self.requests.append(f"GET {request.path}")
        if self.forbidden:
            return self._refusal()
        return web.json_response(self._scale(request))

    async def _patch_scale(self, request: web.Request) -> web.Response:
        self.requests.append(f"PATCH {request.path}")
        assert request.content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        )
        patch = await request.json()
        self.patches.append(patch)
        self.replicas[request.match_info["name"]] = patch["spec"]["replicas"]
        return web.json_response(self._scale(request))


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiStandIn, URL]]:
    stand_in = ApiStandIn()
    async with serving(stand_in.app()) as url:
        yield stand_in, url
        await stand_in.events.put(None)  # end an open watch so its thread can leave


def test_slice_readiness_counts_ready_and_unset_conditions() -> None:
    """Endpoints with ready true or unset count; ready false does not (EndpointSlice API)."""
    item = k8s.V1EndpointSlice.from_dict(endpoint_slice("a", "mixtral-8x7b", [True, None, False]))
    assert slice_readiness(item) == ("mixtral-8x7b", 2)


async def test_watch_follows_the_services_endpointslices(api: tuple[ApiStandIn, URL]) -> None:
    """List, then watch: ready endpoints summed over slices, updated on MODIFIED/DELETED."""
    stand_in, url = api
    stand_in.slices["mixtral-x1"] = endpoint_slice("mixtral-x1", "mixtral-8x7b", [False])
    routes = build_routes([make_policy("mixtral-8x7b"), make_policy("tinyllama")])
    tracker = EndpointTracker()
    seen: list[tuple[str, int]] = []
    tracker.listen(lambda model, count: seen.append((model, count)))
    watch = EndpointSliceWatch(routes=routes, tracker=tracker, api_client=stand_in.api_client(url))
    watch.start()
    try:
        await until(stand_in.watching, what="the watch request")
        await until(lambda: ("mixtral-8x7b", 0) in seen, what="the listed state")
        assert set(stand_in.selectors) == {"kubernetes.io/service-name in (mixtral-8x7b,tinyllama)"}
        ready = endpoint_slice("mixtral-x1", "mixtral-8x7b", [True])
        await stand_in.events.put({"type": "MODIFIED", "object": ready})
        second = endpoint_slice("mixtral-x2", "mixtral-8x7b", [None])
        await stand_in.events.put({"type": "ADDED", "object": second})
        await until(lambda: tracker.ready("mixtral-8x7b") == 2, what="two ready endpoints")
        await stand_in.events.put({"type": "DELETED", "object": ready})
        await stand_in.events.put({"type": "DELETED", "object": second})
        await until(lambda: tracker.ready("mixtral-8x7b") == 0, what="no ready endpoint")
        assert tracker.ready("tinyllama") == 0
    finally:
        await stand_in.events.put(None)
        await watch.stop()


async def test_scale_on_wake_scales_a_deployment_at_zero_to_one_once(
    api: tuple[ApiStandIn, URL],
) -> None:
    """A held request for a model at 0 patches its scale to 1, once for a burst of requests."""
    stand_in, url = api
    stand_in.replicas["mixtral-8x7b"] = 0
    waker = DeploymentWaker(api_client=stand_in.api_client(url))
    tracker = EndpointTracker()
    policy = make_policy("mixtral-8x7b")
    async with (
        ModelServerEmulator() as server,
        running_activator(
            [policy], upstreams={"mixtral-8x7b": server.url}, tracker=tracker, wake=waker
        ) as (activator, proxy),
        aiohttp.ClientSession() as session,
    ):
        target = proxy.with_path("/mixtral-8x7b/v1/completions")
        tasks = [asyncio.create_task(session.post(target, data=b"{}")) for _ in range(3)]
        await until(lambda: activator.gates["mixtral-8x7b"].pending == 3, what="3 held")
        await waker.drain()
        assert stand_in.patches == [{"spec": {"replicas": 1}}]
        tracker.set_ready("mixtral-8x7b", 1)  # the pod came up
        for response in await asyncio.gather(*tasks):
            assert response.status == 200
            response.release()


async def test_scale_on_wake_never_touches_a_nonzero_count(api: tuple[ApiStandIn, URL]) -> None:
    """A Deployment already at 1 (starting) is left alone: no PATCH."""
    stand_in, url = api
    stand_in.replicas["mixtral-8x7b"] = 1
    waker = DeploymentWaker(api_client=stand_in.api_client(url))
    (route,) = build_routes([make_policy("mixtral-8x7b")])
    waker(route)
    await waker.drain()
    assert stand_in.requests == [
        "GET /apis/apps/v1/namespaces/cortex/deployments/mixtral-8x7b/scale"
    ]
    assert stand_in.patches == []


async def test_scale_on_wake_without_rbac_logs_and_goes_on(api: tuple[ApiStandIn, URL]) -> None:
    """A 403 (no RBAC for deployments/scale) is logged with a hint; nothing raises."""
    stand_in, url = api
    stand_in.forbidden = True
    waker = DeploymentWaker(api_client=stand_in.api_client(url), retry_after_s=0)
    (route,) = build_routes([make_policy("mixtral-8x7b")])
    with capture_logs() as logs:
        waker(route)
        await waker.drain()
        waker(route)
        await waker.drain()
    assert [entry["event"] for entry in logs] == ["scale_on_wake_forbidden"]
    assert stand_in.patches == []
