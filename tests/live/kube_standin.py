"""A stand-in for kube-apiserver, for the REST paths the adapter uses (no real one can run here).

No kube-apiserver, kind, k3s or kwok can be installed on the test machine (none is packaged
for it, and kind fetches its binaries at run time), so the live adapter is tested against
this aiohttp HTTPS server on 127.0.0.1 with a trustme CA and a bearer token, driven by the official
``kubernetes`` client exactly as in a cluster.

What it serves (the real paths, verbs and status codes):

- ``GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}`` and ``.../{name}/scale``;
- ``GET/POST /apis/coordination.k8s.io/v1/namespaces/{ns}/leases``, ``GET/PUT .../{name}``;
- ``POST /apis/events.k8s.io/v1/namespaces/{ns}/events``;
- ``GET /api/v1/namespaces/{ns}/configmaps/{name}``, ``GET /api/v1/nodes``,
  ``GET /api/v1/namespaces/{ns}/pods?labelSelector=...`` (equality and set-based selectors).

What it checks, like the real server:

- a bearer token (401 Status without it);
- every object it receives or produces by a patch (a Scale, a Lease, an Event, a Deployment
  with the patch merged in) against the official OpenAPI schema with
  ``kubernetes_validate.validate(obj, "1.33.0", strict=True)`` (unknown fields are errors),
  plus the server-side rules those schemas cannot say: Event eventTime, action, reason,
  reportingController/Instance required, type Normal or Warning, note at most 1 kB;
  scale replicas not negative; annotation keys qualified names. A violation is a 422 Status
  with reason Invalid;
- apiVersion/kind defaulted from the URL when absent, 400 when they disagree with it;
- optimistic concurrency: a resourceVersion in a PUT body or in a patch is a precondition,
  409 Conflict Status when it is not the current one; POST of an existing Lease is 409
  AlreadyExists; every write bumps one cluster-wide resourceVersion counter;
- patch content types: ``application/merge-patch+json`` (RFC 7386),
  ``application/json-patch+json`` (RFC 6902: add, remove, replace, move, copy, test) and
  ``application/strategic-merge-patch+json``; anything else is 415.

What it does not do: no controllers (a scale write changes spec.replicas only; tests set
readiness with `set_ready`), no watches, no field managers or server-side apply, no RBAC
(it records every request instead, so the tests derive the calls the code makes), and the
strategic merge patch is approximated as a merge patch (lists are replaced, not merged by
their patch merge key; scaler itself only sends merge patches).

Faults: `fail_next(verb, resource, subresource, status=..., times=N)` answers the next N
matching requests with that Status; ``timeout=True`` holds them without an answer (the
client's timeout fires); ``after_apply=True`` applies the change first, then holds the
answer, the case where a write took effect but its client never learnt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import ssl
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import trustme
from aiohttp import web
from kubernetes import client as k8s

SCHEMA_VERSION = "1.33.0"
TOKEN = "standin-token"  # a test credential for a loopback stand-in

JsonObject = dict[str, Any]

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_EVENT_REQUIRED = ("eventTime", "action", "reason", "reportingController", "reportingInstance")
_KIND_BY_RESOURCE = {
    ("apps", "deployments"): ("apps/v1", "Deployment"),
    ("coordination.k8s.io", "leases"): ("coordination.k8s.io/v1", "Lease"),
    ("events.k8s.io", "events"): ("events.k8s.io/v1", "Event"),
    ("", "configmaps"): ("v1", "ConfigMap"),
    ("", "nodes"): ("v1", "Node"),
    ("", "pods"): ("v1", "Pod"),
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the stand-in received, in RBAC terms, with the status it answered."""

    method: str
    path: str
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    status: int | None  # None: held without an answer (timeout fault)
    content_type: str
    query: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = ""

    @property
    def call(self) -> tuple[str, str, str, str]:
        """(verb, group, resource, subresource), as in scaler.live.kube.KUBERNETES_CALLS."""
        return (self.verb, self.group, self.resource, self.subresource)


@dataclass
class _Fault:
    verb: str
    resource: str
    subresource: str
    status: int
    remaining: int
    timeout: bool
    after_apply: bool


class StandInError(Exception):
    """Turned into a Kubernetes Status response."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class _Route:
    group: str
    version: str
    namespace: str
    resource: str
    name: str
    subresource: str


def _parse_path(path: str) -> _Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return _Route(
        group=group,
        version=version,
        namespace=namespace,
        resource=rest[0],
        name=rest[1] if len(rest) > 1 else "",
        subresource=rest[2] if len(rest) > 2 else "",
    )


def _verb(method: str, route: _Route) -> str:
    if method == "GET":
        return "get" if route.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def status_object(code: int, reason: str, message: str) -> JsonObject:
    """A metav1 Status failure object, as the API server sends with every error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise StandInError(422, "Invalid", f"json patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise StandInError(422, "Invalid", f"json patch path /{'/'.join(tokens)} not found")
    return node, tokens[-1]


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise StandInError(422, "Invalid", f"json patch path /{'/'.join(tokens)} not found")


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise StandInError(422, "Invalid", f"json patch: nothing to remove at /{'/'.join(tokens)}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise StandInError(422, "Invalid", f"json patch: bad array index {last!r}")
    else:
        raise StandInError(422, "Invalid", "json patch: parent is not a container")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise StandInError(400, "BadRequest", "json patch body must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise StandInError(400, "BadRequest", f"malformed json patch operation {op!r}")
        tokens = _pointer(op["path"])
        kind = op["op"]
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)
            if tokens:
                _remove(doc, tokens)
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op.get("value"):
                raise StandInError(422, "Invalid", f"json patch test failed at {op['path']}")
        else:
            raise StandInError(400, "BadRequest", f"unknown json patch op {kind!r}")
    return doc


def apply_patch(target: JsonObject, content_type: str, body: Any) -> JsonObject:
    """`target` with the patch applied as the real server does for `content_type`."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/merge-patch+json":
        patched = merge_patch(target, body)
    elif media == "application/strategic-merge-patch+json":
        # Approximation: maps merge like a merge patch; lists are replaced (see module doc).
        patched = merge_patch(target, body)
    elif media == "application/json-patch+json":
        patched = json_patch(target, body)
    else:
        raise StandInError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format: {media}",
        )
    if not isinstance(patched, dict):
        raise StandInError(422, "Invalid", "the patched object is not an object")
    return patched


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether `labels` match a label-selector string (equality and set-based terms)."""
    terms: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    for raw in terms:
        term = raw.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, operator = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",")}
            if (operator == "in") != (key in labels and labels[key] in values):
                return False
        elif m := re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(\S*)", term):
            key, operator, value = m.groups()
            equal = labels.get(key) == value
            if equal != (operator != "!="):
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeStandIn:
    """The stand-in server: seed it, start it, point the official client at it, inspect it."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.ca = ca or trustme.CA()
        self.requests: list[RecordedRequest] = []
        self._objects: dict[tuple[str, str, str, str], JsonObject] = {}
        self.events: list[JsonObject] = []
        self._faults: list[_Fault] = []
        self._rv = itertools.count(100)
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._clients: list[k8s.ApiClient] = []
        self._holding = 0
        self._held_transports: list[asyncio.BaseTransport] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-standin-")
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.url = ""

    # ---- lifecycle and client ---------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port, over TLS."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"https://{host}:{port}"

    async def close(self) -> None:
        """Release held requests and stop listening."""
        self._released.set()
        for _ in range(200):  # let held handlers answer before the server goes (bounded)
            if not self._holding:
                break
            await asyncio.sleep(0.01)
        for api_client in self._clients:
            api_client.close()  # type: ignore[no-untyped-call]  # the client ships no types here
        if self._runner is not None:
            server = self._runner.server
            open_transports = [c.transport for c in server.connections] if server else []
            await self._runner.cleanup()
            # A connection whose client timed out would wait for a TLS close_notify that
            # never comes; abort them so no socket outlives the event loop.
            for transport in (*self._held_transports, *open_transports):
                # asyncio's TLS transport has no public handle on its socket transport.
                raw = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
                for each in (transport, raw):
                    if isinstance(each, asyncio.Transport):
                        each.abort()
            await asyncio.sleep(0.01)  # abort() closes the socket on the next loop turn
        self._tmp.cleanup()

    def configuration(self, *, token: str = TOKEN) -> k8s.Configuration:
        """A client Configuration for the stand-in: its CA, a bearer token, no retries."""
        configuration = k8s.Configuration(host=self.url, ssl_ca_cert=str(self.ca_file))
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        configuration.retries = 0
        return configuration

    def api_client(self, *, token: str = TOKEN, user_agent: str | None = None) -> k8s.ApiClient:
        """An official ApiClient talking to the stand-in (closed with the stand-in); a
        `user_agent` tells the recorded requests of several clients apart."""
        api_client = k8s.ApiClient(self.configuration(token=token))
        if user_agent is not None:
            api_client.user_agent = user_agent
        self._clients.append(api_client)
        return api_client

    # ---- seeding ----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _store(self, group: str, resource: str, namespace: str, obj: JsonObject) -> JsonObject:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = self._next_rv()
        self._objects[(group, resource, namespace, meta["name"])] = obj
        return obj

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int,
        ready: int | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Seed a schema-valid Deployment; pods are selected by `labels` (default app=name)."""
        labels = dict(labels or {"app": name})
        obj: JsonObject = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "server", "image": "llama.cpp:server"}]},
                },
            },
            "status": {
                "replicas": replicas,
                "readyReplicas": replicas if ready is None else ready,
                "observedGeneration": 1,
            },
        }
        if annotations:
            obj["metadata"]["annotations"] = dict(annotations)
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        return self._store("apps", "deployments", namespace, obj)

    def add_node(self, name: str, *, memory: str, unschedulable: bool = False) -> None:
        """Seed a node with allocatable `memory` (a Quantity such as "96Gi")."""
        obj: JsonObject = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"memory": memory, "cpu": "16"}},
        }
        self._store("", "nodes", "", obj)

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str],
        node: str | None,
        phase: str | None = None,
        deleting: bool = False,
    ) -> None:
        """Seed a pod with `labels`, running on `node` (None: Pending, unscheduled); `phase`
        overrides the status phase (``Succeeded``, ``Failed``), `deleting` gives it a
        ``deletionTimestamp`` as a pod in its termination grace period has."""
        metadata: JsonObject = {"name": name, "namespace": namespace, "labels": dict(labels)}
        if deleting:
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            metadata["deletionGracePeriodSeconds"] = 600
        obj: JsonObject = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "server", "image": "llama.cpp:server"}]},
            "status": {"phase": phase or ("Running" if node else "Pending")},
        }
        if node:
            obj["spec"]["nodeName"] = node
        self._store("", "pods", namespace, obj)

    def add_config_map(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Seed a ConfigMap."""
        obj: JsonObject = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }
        self._store("", "configmaps", namespace, obj)

    # ---- inspection and test-side changes ---------------------------------------------------

    def deployment(self, namespace: str, name: str) -> JsonObject:
        """The stored Deployment (a copy)."""
        return copy.deepcopy(self._objects[("apps", "deployments", namespace, name)])

    def lease(self, namespace: str, name: str) -> JsonObject | None:
        """The stored Lease (a copy), None when absent."""
        obj = self._objects.get(("coordination.k8s.io", "leases", namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def set_ready(self, namespace: str, name: str, ready: int) -> None:
        """Play the Deployment controller: `ready` replicas report Ready."""
        obj = self._objects[("apps", "deployments", namespace, name)]
        obj["status"]["readyReplicas"] = ready
        obj["status"]["replicas"] = obj["spec"]["replicas"]
        obj["metadata"]["resourceVersion"] = self._next_rv()

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Play another writer (a person, the HPA): set spec.replicas."""
        obj = self._objects[("apps", "deployments", namespace, name)]
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["resourceVersion"] = self._next_rv()

    def bump(self, namespace: str, name: str) -> None:
        """Play a controller's status update: the Deployment's resourceVersion changes."""
        obj = self._objects[("apps", "deployments", namespace, name)]
        obj["metadata"]["resourceVersion"] = self._next_rv()

    def calls(self) -> set[tuple[str, str, str, str]]:
        """The distinct (verb, group, resource, subresource) received so far."""
        return {r.call for r in self.requests}

    def writes(self, resource: str, subresource: str = "") -> list[RecordedRequest]:
        """The write requests (create, update, patch) answered 2xx on a resource."""
        return [
            r
            for r in self.requests
            if r.resource == resource
            and r.subresource == subresource
            and r.verb in ("create", "update", "patch")
            and r.status is not None
            and 200 <= r.status < 300
        ]

    def fail_next(
        self,
        verb: str,
        resource: str,
        subresource: str = "",
        *,
        status: int = 500,
        times: int = 1,
        timeout: bool = False,
        after_apply: bool = False,
    ) -> None:
        """Answer the next `times` matching requests with `status` (or hold them: timeout)."""
        self._faults.append(
            _Fault(verb, resource, subresource, status, times, timeout or after_apply, after_apply)
        )

    # ---- request handling -------------------------------------------------------------------

    def _take_fault(self, verb: str, route: _Route) -> _Fault | None:
        for fault in self._faults:
            if (
                fault.remaining > 0
                and fault.verb == verb
                and fault.resource == route.resource
                and fault.subresource == route.subresource
            ):
                fault.remaining -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = _parse_path(request.path)
        verb = _verb(request.method, route) if route else request.method.lower()

        def record(status: int | None) -> None:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    verb=verb,
                    group=route.group if route else "",
                    resource=route.resource if route else "",
                    subresource=route.subresource if route else "",
                    namespace=route.namespace if route else "",
                    name=route.name if route else "",
                    status=status,
                    content_type=request.headers.get("Content-Type", ""),
                    query=dict(request.query),
                    user_agent=request.headers.get("User-Agent", ""),
                )
            )

        try:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                raise StandInError(401, "Unauthorized", "Unauthorized")
            if route is None:
                raise StandInError(404, "NotFound", f"the server could not find {request.path}")
            fault = self._take_fault(verb, route)
            if fault is not None and not fault.after_apply:
                if fault.timeout:
                    record(None)  # recorded now: the test may look before the stand-in closes
                    await self._hold(request)
                    return web.Response(status=504)
                raise StandInError(
                    fault.status,
                    "Conflict" if fault.status == 409 else "InternalError",
                    f"injected fault: {fault.status}",
                )
            body = await self._dispatch(request, verb, route)
            if fault is not None:  # after_apply: the change is made, the answer never comes
                record(None)
                await self._hold(request)
                return web.Response(status=504)
            status = 201 if verb == "create" else 200
            record(status)
            return web.json_response(body, status=status)
        except StandInError as exc:
            record(exc.code)
            failure = status_object(exc.code, exc.reason, exc.message)
            return web.json_response(failure, status=exc.code)

    async def _hold(self, request: web.Request) -> None:
        """Keep a request unanswered until the stand-in closes (bounded)."""
        if request.transport is not None:
            # Aborted at close: its client gave up, and a TLS close would wait for a peer
            # that is gone, leaving the socket open past the event loop.
            self._held_transports.append(request.transport)
        self._holding += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), timeout=30.0)
        finally:
            self._holding -= 1

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise StandInError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    async def _dispatch(self, request: web.Request, verb: str, route: _Route) -> JsonObject:
        handler: Callable[..., Any] | None = {
            ("apps", "deployments", "", "get"): self._get_object,
            ("apps", "deployments", "", "patch"): self._patch_deployment,
            ("apps", "deployments", "scale", "get"): self._get_scale,
            ("apps", "deployments", "scale", "patch"): self._patch_scale,
            ("coordination.k8s.io", "leases", "", "get"): self._get_object,
            ("coordination.k8s.io", "leases", "", "create"): self._create,
            ("coordination.k8s.io", "leases", "", "update"): self._replace,
            ("events.k8s.io", "events", "", "create"): self._create_event,
            ("", "configmaps", "", "get"): self._get_object,
            ("", "nodes", "", "list"): self._list,
            ("", "pods", "", "list"): self._list,
        }.get((route.group, route.resource, route.subresource, verb))
        if handler is None:
            raise StandInError(
                405, "MethodNotAllowed", f"{verb} {route.resource} is not served by the stand-in"
            )
        result: JsonObject = await handler(request, route)
        return result

    def _stored(self, route: _Route) -> JsonObject:
        key = (route.group, route.resource, route.namespace, route.name)
        if key not in self._objects:
            kind = _KIND_BY_RESOURCE.get((route.group, route.resource), ("", route.resource))[1]
            raise StandInError(404, "NotFound", f'{kind.lower()}s "{route.name}" not found')
        return self._objects[key]

    def _typed(self, route: _Route, obj: Any) -> JsonObject:
        """Default apiVersion/kind from the URL, as the real decoder does; 400 on a mismatch."""
        if not isinstance(obj, dict):
            raise StandInError(400, "BadRequest", "the body is not a JSON object")
        api_version, kind = _KIND_BY_RESOURCE[(route.group, route.resource)]
        if obj.setdefault("apiVersion", api_version) != api_version:
            raise StandInError(400, "BadRequest", f"apiVersion must be {api_version}")
        if obj.setdefault("kind", kind) != kind:
            raise StandInError(400, "BadRequest", f"kind must be {kind}")
        return obj

    @staticmethod
    def _validate(obj: JsonObject) -> None:
        try:
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in getattr(exc, "path", ()))
            first = str(exc).splitlines()[0]
            raise StandInError(
                422, "Invalid", f"{obj.get('kind')} is invalid: {path}: {first}"
            ) from None
        annotations = obj.get("metadata", {}).get("annotations") or {}
        for key in annotations:
            prefix, _, name = key.rpartition("/")
            if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not (
                _QUALIFIED_NAME.match(name) and len(name) <= 63
            ):
                raise StandInError(
                    422,
                    "Invalid",
                    f"metadata.annotations: Invalid value: {key!r}: not a qualified name",
                )

    def _precondition(self, stored: JsonObject, incoming: JsonObject) -> None:
        wanted = incoming.get("metadata", {}).get("resourceVersion")
        current = stored["metadata"]["resourceVersion"]
        if wanted is not None and wanted != current:
            kind = stored.get("kind", "object")
            raise StandInError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.lower()}s "{stored["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )

    async def _get_object(self, request: web.Request, route: _Route) -> JsonObject:
        return copy.deepcopy(self._stored(route))

    async def _list(self, request: web.Request, route: _Route) -> JsonObject:
        selector = request.query.get("labelSelector", "")
        items = [
            copy.deepcopy(obj)
            for (group, resource, namespace, _), obj in sorted(self._objects.items())
            if group == route.group
            and resource == route.resource
            and (not route.namespace or namespace == route.namespace)
            and selector_matches(selector, obj["metadata"].get("labels") or {})
        ]
        api_version, kind = _KIND_BY_RESOURCE[(route.group, route.resource)]
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    def _scale_of(self, deployment: JsonObject) -> JsonObject:
        meta = deployment["metadata"]
        labels = deployment["spec"]["selector"].get("matchLabels", {})
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {
                "replicas": deployment["status"].get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    async def _get_scale(self, request: web.Request, route: _Route) -> JsonObject:
        return self._scale_of(self._stored(route))

    async def _patch_scale(self, request: web.Request, route: _Route) -> JsonObject:
        deployment = self._stored(route)
        scale = self._scale_of(deployment)
        patched = apply_patch(scale, request.content_type, await self._json_body(request))
        self._precondition(deployment, patched)
        self._validate(patched)
        replicas = patched.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise StandInError(
                422, "Invalid", f"Scale is invalid: spec.replicas: must be >= 0, got {replicas!r}"
            )
        if replicas != deployment["spec"]["replicas"]:
            deployment["spec"]["replicas"] = replicas
            deployment["metadata"]["generation"] = deployment["metadata"].get("generation", 1) + 1
        deployment["metadata"]["resourceVersion"] = self._next_rv()
        return self._scale_of(deployment)

    async def _patch_deployment(self, request: web.Request, route: _Route) -> JsonObject:
        stored = self._stored(route)
        patched = apply_patch(stored, request.content_type, await self._json_body(request))
        self._precondition(stored, patched)
        patched["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        for immutable in ("name", "namespace", "uid"):
            if patched["metadata"].get(immutable) != stored["metadata"].get(immutable):
                raise StandInError(422, "Invalid", f"metadata.{immutable}: field is immutable")
        self._validate(patched)
        if patched["spec"] != stored["spec"]:
            patched["metadata"]["generation"] = stored["metadata"].get("generation", 1) + 1
        patched["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[(route.group, route.resource, route.namespace, route.name)] = patched
        return copy.deepcopy(patched)

    async def _create(self, request: web.Request, route: _Route) -> JsonObject:
        obj = self._typed(route, await self._json_body(request))
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", route.namespace) != route.namespace:
            raise StandInError(400, "BadRequest", "the namespace of the object does not match")
        meta["namespace"] = route.namespace
        if not meta.get("name"):
            raise StandInError(422, "Invalid", "metadata.name: Required value")
        if meta.get("resourceVersion"):
            raise StandInError(422, "Invalid", "metadata.resourceVersion: must be empty on create")
        key = (route.group, route.resource, route.namespace, meta["name"])
        if key in self._objects:
            raise StandInError(
                409, "AlreadyExists", f'{obj["kind"].lower()}s "{meta["name"]}" already exists'
            )
        self._validate(obj)
        return copy.deepcopy(self._store(route.group, route.resource, route.namespace, obj))

    async def _replace(self, request: web.Request, route: _Route) -> JsonObject:
        stored = self._stored(route)
        obj = self._typed(route, await self._json_body(request))
        meta = obj.setdefault("metadata", {})
        if meta.get("name") != route.name:
            raise StandInError(400, "BadRequest", "the name of the object does not match the URL")
        meta["namespace"] = route.namespace
        self._precondition(stored, obj)
        self._validate(obj)
        meta["uid"] = stored["metadata"]["uid"]
        meta["creationTimestamp"] = stored["metadata"]["creationTimestamp"]
        return copy.deepcopy(self._store(route.group, route.resource, route.namespace, obj))

    async def _create_event(self, request: web.Request, route: _Route) -> JsonObject:
        obj = self._typed(route, await self._json_body(request))
        problems = [
            f"{name}: Required value"
            for name in (
                "eventTime",
                "action",
                "reason",
                "reportingController",
                "reportingInstance",
            )
            if not obj.get(name)
        ]
        if obj.get("type") not in ("Normal", "Warning"):
            problems.append(f"type: Unsupported value: {obj.get('type')!r}")
        if len(str(obj.get("note", "")).encode()) > 1024:
            problems.append("note: Too long: may not be longer than 1024")
        for name in ("action", "reason"):
            if len(str(obj.get(name, ""))) > 128:
                problems.append(f"{name}: Too long: may not be longer than 128")
        if not isinstance(obj.get("regarding"), dict):
            problems.append("regarding: Required value")
        if problems:
            raise StandInError(422, "Invalid", "Event is invalid: " + "; ".join(problems))
        created = await self._create_stored_event(route, obj)
        self.events.append(copy.deepcopy(created))
        return created

    async def _create_stored_event(self, route: _Route, obj: JsonObject) -> JsonObject:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = route.namespace
        if not meta.get("name"):
            raise StandInError(422, "Invalid", "metadata.name: Required value")
        self._validate(obj)
        return copy.deepcopy(self._store(route.group, route.resource, route.namespace, obj))
