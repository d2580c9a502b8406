"""The API application over plain HTTP (anonymous allowed): paths, bodies, Status errors."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from scaler import metric_names as names
from scaler.api.selector import MAX_SELECTOR_LENGTH
from scaler.api.server import serve_api
from scaler.core import Signal
from scaler.core.sizing import Sizing
from tests.api.conftest import MODELS, STALENESS, START, Wiring, make_decision

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
BASE = "/apis/external.metrics.k8s.io/v1beta1"
DESIRED = f"{BASE}/namespaces/cortex/{names.EXTERNAL_DESIRED_REPLICAS}"
QUEUE = f"{BASE}/namespaces/cortex/{names.EXTERNAL_BY_SIGNAL[Signal.QUEUE_DEPTH]}"


@pytest.fixture
async def client(wiring: Wiring, aiohttp_client: Any) -> Client:
    """A test client of the app, every model published once at START."""
    for model in MODELS:
        wiring.store.publish(make_decision(model, desired=MODELS.index(model) + 1))
    result: Client = await aiohttp_client(wiring.app())
    return result


async def json_of(client: Client, path: str | URL, status: int = 200) -> Any:
    """GET `path`, check the status and the JSON content type, return the body."""
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def assert_status(body: Any, code: int, reason: str) -> None:
    """`body` is a metav1.Status failure with `code` and `reason`."""
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert (body["code"], body["reason"]) == (code, reason)
    assert body["message"]


# --- discovery


@pytest.mark.parametrize("path", ["/apis", "/apis/"])
async def test_group_list_names_the_group_and_preferred_version(client: Client, path: str) -> None:
    """/apis is an APIGroupList with our group, its version and preferred version."""
    body = await json_of(client, path)
    assert body["kind"] == "APIGroupList"
    [group] = body["groups"]
    version = {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}
    assert group == {
        "name": "external.metrics.k8s.io",
        "versions": [version],
        "preferredVersion": version,
    }


async def test_group_document(client: Client) -> None:
    """/apis/external.metrics.k8s.io is an APIGroup with kind and apiVersion."""
    body = await json_of(client, "/apis/external.metrics.k8s.io")
    assert (body["kind"], body["apiVersion"], body["name"]) == (
        "APIGroup",
        "v1",
        "external.metrics.k8s.io",
    )


async def test_resource_list_lists_every_metric_with_required_fields(client: Client) -> None:
    """The APIResourceList is never empty and lists each served metric, fields not omitted."""
    body = await json_of(client, BASE)
    assert (body["kind"], body["groupVersion"]) == (
        "APIResourceList",
        "external.metrics.k8s.io/v1beta1",
    )
    assert [r["name"] for r in body["resources"]] == list(names.EXTERNAL_METRICS)
    for resource in body["resources"]:
        assert resource == {
            "name": resource["name"],
            "singularName": "",
            "namespaced": True,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }


async def test_discovery_is_served_before_any_decision(wiring: Wiring, aiohttp_client: Any) -> None:
    """The availability probe target answers 2xx even before the first tick."""
    client: Client = await aiohttp_client(wiring.app())
    body = await json_of(client, BASE)
    assert body["resources"]


# --- ExternalMetricValueList


async def test_selected_model_gives_one_item(client: Client) -> None:
    """model=mistral-7b gives exactly its item: name, labels, RFC3339 timestamp, Quantity."""
    body = await json_of(client, f"{DESIRED}?labelSelector=model%3Dmistral-7b")
    assert body == {
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [
            {
                "metricName": "scaler-desired-replicas",
                "metricLabels": {"model": "mistral-7b"},
                "timestamp": "2026-09-21T14:13:20Z",
                "value": "2",
            }
        ],
    }


async def test_signal_value_is_a_canonical_quantity(client: Client) -> None:
    """A fractional signal is served in milli-units ("1500m")."""
    body = await json_of(client, f"{QUEUE}?labelSelector=model%3Dtinyllama")
    assert body["items"][0]["value"] == "1500m"


async def test_missing_selector_selects_every_model_in_the_namespace(client: Client) -> None:
    """No labelSelector means everything (the HPA omits an empty selector)."""
    body = await json_of(client, DESIRED)
    assert sorted(i["metricLabels"]["model"] for i in body["items"]) == sorted(MODELS)


async def test_set_selector_selects_several_models(client: Client) -> None:
    """`model in (a,b)` returns one item per selected model."""
    body = await json_of(client, f"{DESIRED}?labelSelector=model+in+%28tinyllama%2Cmixtral-8x7b%29")
    assert [i["metricLabels"]["model"] for i in body["items"]] == ["mixtral-8x7b", "tinyllama"]


async def test_metric_name_is_case_insensitive(client: Client) -> None:
    """An upper-case metric name in the URL is served under its canonical lower-case name."""
    path = f"{BASE}/namespaces/cortex/Scaler-Desired-Replicas?labelSelector=model%3Dmistral-7b"
    body = await json_of(client, path)
    assert body["items"][0]["metricName"] == "scaler-desired-replicas"


async def test_true_zero_is_served_as_zero(wiring: Wiring, client: Client) -> None:
    """A measured 0 is an item with value "0", never an empty list."""
    wiring.store.publish(make_decision(signals={Signal.QUEUE_DEPTH: 0.0}))
    body = await json_of(client, f"{QUEUE}?labelSelector=model%3Dmistral-7b")
    assert body["items"][0]["value"] == "0"


async def test_unknown_metric_is_404_with_upstream_text(client: Client) -> None:
    """A metric scaler does not serve is a 404 NotFound Status in upstream's words."""
    body = await json_of(client, f"{BASE}/namespaces/cortex/scaler-foo", 404)
    assert_status(body, 404, "NotFound")
    assert body["message"].startswith("the server could not find the metric scaler-foo for ")


async def test_selector_matching_no_model_is_404(client: Client) -> None:
    """A selector that selects nothing is a 404 (the HPA then holds), never an empty list."""
    body = await json_of(client, f"{DESIRED}?labelSelector=model%3Dllama-70b", 404)
    assert_status(body, 404, "NotFound")


async def test_model_outside_its_namespace_is_404(client: Client) -> None:
    """A model is served only in its policy's target namespace."""
    path = f"{BASE}/namespaces/default/scaler-desired-replicas?labelSelector=model%3Dmistral-7b"
    assert_status(await json_of(client, path, 404), 404, "NotFound")


async def test_without_namespace_mapping_every_namespace_serves(
    wiring: Wiring, aiohttp_client: Any
) -> None:
    """build_app without `namespaces` serves each model in any namespace."""
    wiring.store.publish(make_decision())
    client: Client = await aiohttp_client(wiring.app(namespaces=None))
    path = f"{BASE}/namespaces/default/scaler-desired-replicas?labelSelector=model%3Dmistral-7b"
    assert (await json_of(client, path))["items"][0]["value"] == "2"


async def test_bad_selector_is_400_naming_the_selector(client: Client) -> None:
    """An unparsable selector is a 400 BadRequest Status that quotes it."""
    body = await json_of(client, f"{DESIRED}?labelSelector=model+in+%28a", 400)
    assert_status(body, 400, "BadRequest")
    assert "model in (a" in body["message"]


async def test_value_served_until_the_staleness_limit(wiring: Wiring, client: Client) -> None:
    """At exactly the staleness limit the last good value is still served."""
    wiring.clock.now = START + STALENESS
    body = await json_of(client, f"{QUEUE}?labelSelector=model%3Dmistral-7b")
    assert body["items"][0]["value"] == "1500m"


async def test_stale_value_is_503(wiring: Wiring, client: Client) -> None:
    """Past the staleness limit the answer is a 503 ServiceUnavailable Status."""
    wiring.clock.now = START + STALENESS + 1
    body = await json_of(client, f"{QUEUE}?labelSelector=model%3Dmistral-7b", 503)
    assert_status(body, 503, "ServiceUnavailable")


async def test_one_stale_model_among_selected_makes_the_list_503(
    wiring: Wiring, client: Client
) -> None:
    """The HPA sums items: a partial list would under-count, so any stale model is a 503."""
    wiring.clock.now = START + STALENESS + 1
    for model in MODELS[1:]:
        wiring.store.publish(make_decision(model, time=wiring.clock.now))
    assert_status(await json_of(client, DESIRED, 503), 503, "ServiceUnavailable")


async def test_repeated_question_turns_stale_on_time(wiring: Wiring, client: Client) -> None:
    """An answer given once is not reused past the staleness limit: the same URL turns 503."""
    path = f"{QUEUE}?labelSelector=model%3Dmistral-7b"
    assert (await json_of(client, path))["items"][0]["value"] == "1500m"
    wiring.clock.now = START + STALENESS + 1
    assert_status(await json_of(client, path, 503), 503, "ServiceUnavailable")


async def test_repeated_question_sees_a_new_decision(wiring: Wiring, client: Client) -> None:
    """A publish between two identical requests changes the second answer."""
    path = f"{DESIRED}?labelSelector=model%3Dmistral-7b"
    assert (await json_of(client, path))["items"][0]["value"] == "2"
    wiring.store.publish(make_decision(time=START + 5, desired=5))
    wiring.clock.now = START + 5
    item = (await json_of(client, path))["items"][0]
    assert (item["value"], item["timestamp"]) == ("5", "2026-09-21T14:13:25Z")


async def test_repeated_list_turns_stale_with_its_oldest_model(
    wiring: Wiring, client: Client
) -> None:
    """A cached list of several models expires at the earliest of their limits, not later."""
    wiring.clock.now = START + 30
    for model in MODELS:
        if model != "mistral-7b":  # neither first nor last in the list
            wiring.store.publish(make_decision(model, time=wiring.clock.now))
    assert len((await json_of(client, DESIRED))["items"]) == len(MODELS)
    wiring.clock.now = START + STALENESS + 1  # mistral-7b (published at START) is now stale
    assert_status(await json_of(client, DESIRED, 503), 503, "ServiceUnavailable")


# --- probes, metrics, debug


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
async def test_liveness_probes_answer_ok(client: Client, path: str) -> None:
    """/healthz and /livez answer 200 while the loop turns."""
    response = await client.get(path)
    assert (response.status, await response.text()) == (200, "ok")


async def test_readyz_waits_for_the_first_tick(wiring: Wiring, client: Client) -> None:
    """/readyz is a 503 Status until Health.mark_ready(), then 200."""
    assert_status(await json_of(client, "/readyz", 503), 503, "ServiceUnavailable")
    wiring.health.mark_ready()
    assert (await client.get("/readyz")).status == 200


async def test_metrics_exports_api_latency_by_route_template(client: Client) -> None:
    """/metrics is text format 0.0.4 with API latency labelled by route template and code."""
    await client.get(f"{DESIRED}?labelSelector=model%3Dmistral-7b")
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    labels = [s.labels for s in families[names.API_REQUEST_DURATION].samples]
    template = f"{BASE}/namespaces/{{namespace}}/{{metric}}"
    assert {"path": template, "code": "200", "le": "0.001"} in labels


async def test_debug_decisions_lists_recent_decisions(client: Client) -> None:
    """/debug/decisions?limit=N gives the newest N decisions as JSON with their reasons."""
    body = await json_of(client, "/debug/decisions?limit=2")
    assert [d["model"] for d in body["decisions"]] == ["mixtral-8x7b", "deepseek-coder"]
    assert body["decisions"][0]["reasons"] == ["Demand"]


async def test_debug_decisions_show_the_calibrated_profile_and_predicted_wait(
    wiring: Wiring, client: Client
) -> None:
    """A sized decision carries the queueing model's view: calibrated service time, the rate
    sized for, the predicted wait (null when endless) and the keep-alive."""
    sizing = Sizing(
        replicas=3,
        arrival_rate=0.2,
        service_seconds=44.5,
        load=12.5,  # more busy slots than 3 replicas x 4 slots: the wait is endless
        predicted_miss=0.004,
        dispersion=1.6,
        slots=4,
    )
    decision = dataclasses.replace(
        make_decision("mixtral-8x7b", time=START + 1), sizing=sizing, keep_alive_s=95.0
    )
    wiring.store.publish(decision)
    body = await json_of(client, "/debug/decisions?limit=1")
    (newest,) = body["decisions"]
    assert newest["keepAliveSeconds"] == 95.0
    assert newest["sizing"] == {
        "replicas": 3,
        "arrivalRate": 0.2,
        "serviceSeconds": 44.5,
        "load": 12.5,
        "predictedWaitSeconds": None,
        "predictedMissRatio": 0.004,
        "arrivalDispersion": 1.6,
    }


@pytest.mark.parametrize("limit", ["abc", "-1"])
async def test_debug_decisions_bad_limit_is_400(client: Client, limit: str) -> None:
    """A limit that is not a non-negative integer is a 400 naming it."""
    body = await json_of(client, f"/debug/decisions?limit={limit}", 400)
    assert_status(body, 400, "BadRequest")
    assert limit in body["message"]


@pytest.mark.parametrize("path", ["/openapi/v2", "/openapi/v3", "/api", "/nope"])
async def test_unserved_paths_are_404_status(client: Client, path: str) -> None:
    """OpenAPI and unknown paths are 404 Status objects (the aggregator skips them)."""
    assert_status(await json_of(client, path, 404), 404, "NotFound")


# --- robustness


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "PROPFIND"])
async def test_other_methods_are_405_status(client: Client, method: str) -> None:
    """Only GET (and HEAD) are served; anything else is a 405 Status."""
    response = await client.request(method, DESIRED)
    assert response.status == 405
    assert_status(await response.json(), 405, "MethodNotAllowed")


async def test_huge_selector_is_400(client: Client) -> None:
    """A selector beyond the length limit is a 400 Status, not work for the parser."""
    selector = "a" * (MAX_SELECTOR_LENGTH + 1)
    body = await json_of(client, f"{DESIRED}?labelSelector={selector}", 400)
    assert_status(body, 400, "BadRequest")


async def test_request_line_beyond_the_http_limit_is_refused(client: Client) -> None:
    """A request line longer than aiohttp's limit is a 400 from the parser; serving goes on."""
    response = await client.get(f"{DESIRED}?labelSelector={'a' * 20_000}")
    assert response.status == 400
    assert (await client.get("/healthz")).status == 200


async def test_bad_utf8_in_path_and_query(client: Client) -> None:
    """Invalid UTF-8 percent-escapes are answered with a Status, not a crash."""
    path = URL(f"{BASE}/namespaces/cortex/%ff%fe?labelSelector=model%3D%ff", encoded=True)
    assert_status(await json_of(client, path, 404), 404, "NotFound")
    query = URL(f"{DESIRED}?labelSelector=model%3D%ff%fe", encoded=True)
    assert_status(await json_of(client, query, 400), 400, "BadRequest")


async def test_unexpected_exception_is_500_and_server_keeps_serving(
    wiring: Wiring, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a handler gives a 500 Status; the next request is served normally."""

    def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(wiring.store, "value", broken)
    body = await json_of(client, DESIRED, 500)
    assert_status(body, 500, "InternalError")
    assert "boom" not in body["message"]
    monkeypatch.undo()
    assert (await json_of(client, DESIRED))["items"]


async def test_garbage_bytes_on_the_socket_do_not_stop_the_server(client: Client) -> None:
    """A connection sending non-HTTP bytes is dropped; the server keeps answering."""
    assert client.server.host is not None
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"\x00\xff GARBAGE \r\n\r\n" * 10)
    await writer.drain()
    await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    assert (await client.get("/healthz")).status == 200


# --- serve_api lifecycle


async def test_serve_api_finishes_in_flight_requests_then_closes(wiring: Wiring) -> None:
    """On exit, shutdown begins with a request in flight, which is still answered; then the
    listener refuses connections."""
    release, entered, shutting_down = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done")

    async def on_shutdown(_app: web.Application) -> None:
        shutting_down.set()

    app = wiring.app()
    app.router.add_get("/slow", slow)
    app.on_shutdown.append(on_shutdown)
    serving = serve_api(app, host="127.0.0.1", port=0, ssl_context=None, close_grace=0.1)
    endpoint = await serving.__aenter__()
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"{endpoint.url}/slow"))
        await asyncio.wait_for(entered.wait(), timeout=5)
        stopping = asyncio.create_task(serving.__aexit__(None, None, None))
        await asyncio.wait_for(shutting_down.wait(), timeout=5)
        release.set()
        response = await asyncio.wait_for(request, timeout=5)
        assert (response.status, await response.text()) == (200, "done")
    await asyncio.wait_for(stopping, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(endpoint.host, endpoint.port)
