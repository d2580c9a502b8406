"""The Kubernetes API as the adapter uses it: typed views over the official client, off the loop.

The official ``kubernetes`` client is synchronous (urllib3); every call here runs in a worker
thread through ``asyncio.to_thread`` with a per-request timeout, so a slow API server never
stalls the control loop or the external metrics API. Only the high-level API classes are
used (``AppsV1Api``, ``CoordinationV1Api``, ``EventsV1Api``, ``CoreV1Api``): they exist with
the same names and arguments in client 36 and in the pydantic regeneration of 37.

Every failure comes out as one exception type, `KubernetesError`, whose `status` is the HTTP
status (409 conflict, 500, ...) or None for a timeout or a broken connection, so callers
can decide what to retry without knowing urllib3.

`KUBERNETES_CALLS` lists every (verb, group, resource, subresource) this module can send. It
is the contract the RBAC manifests are checked against: the tests run the adapter against a
Kubernetes API stand-in that records each request and assert the recorded set equals it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

MERGE_PATCH: Final = "application/merge-patch+json"
"""RFC 7386 JSON merge patch: maps merge, a null deletes, the only patch type we send."""


@dataclass(frozen=True, slots=True, order=True)
class KubernetesCall:
    """One kind of request the adapter makes, as RBAC sees it."""

    verb: str  # RBAC verb: get, list, create, update, patch
    group: str  # API group, "" for the core group
    resource: str
    subresource: str = ""


KUBERNETES_CALLS: Final[frozenset[KubernetesCall]] = frozenset(
    {
        # Current/ready replicas, the selector of the model's pods, the state annotation.
        KubernetesCall("get", "apps", "deployments"),
        # The state annotation (merge patch of metadata.annotations only).
        KubernetesCall("patch", "apps", "deployments"),
        # Re-read after a 409 on the scale write.
        KubernetesCall("get", "apps", "deployments", "scale"),
        # On-demand models 0 -> N and N -> 0.
        KubernetesCall("patch", "apps", "deployments", "scale"),
        # Leader election.
        KubernetesCall("get", "coordination.k8s.io", "leases"),
        KubernetesCall("create", "coordination.k8s.io", "leases"),
        KubernetesCall("update", "coordination.k8s.io", "leases"),
        # One event per scale write, carrying the decision's reasons.
        KubernetesCall("create", "events.k8s.io", "events"),
        # kube-system/extension-apiserver-authentication (front-proxy CA), at start.
        KubernetesCall("get", "", "configmaps"),
        # Placement: node memory and where the model's pods run.
        KubernetesCall("list", "", "nodes"),
        KubernetesCall("list", "", "pods"),
    }
)
"""Every request the adapter sends to the Kubernetes API (the RBAC it needs, exactly)."""


class KubernetesError(Exception):
    """A Kubernetes API request failed; `status` is None for a timeout or connection error."""

    def __init__(self, operation: str, status: int | None, message: str) -> None:
        self.operation = operation
        self.status = status
        self.message = message
        what = "timed out or connection failed" if status is None else f"HTTP {status}"
        super().__init__(f"{operation}: {what}: {message}")

    @property
    def conflict(self) -> bool:
        """409: somebody else changed the object since we read it (or it already exists)."""
        return self.status == 409

    @property
    def kind(self) -> str:
        """A short label for metrics and logs: conflict, timeout, not_found or error."""
        if self.status is None:
            return "timeout"
        if self.status == 409:
            return "conflict"
        if self.status == 404:
            return "not_found"
        return "error"


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """What the adapter reads from a target Deployment each tick."""

    namespace: str
    name: str
    replicas: int  # spec.replicas: what is requested
    ready_replicas: int  # status.readyReplicas
    selector: str  # spec.selector as a label-selector string, "" when it selects nothing
    annotations: Mapping[str, str]
    resource_version: str


@dataclass(frozen=True, slots=True)
class ScaleView:
    """A Deployment's scale subresource."""

    replicas: int
    resource_version: str


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The spec of a coordination.k8s.io/v1 Lease, times as Unix seconds."""

    holder_identity: str | None
    lease_duration_seconds: int
    acquire_time: float | None
    renew_time: float | None
    lease_transitions: int


@dataclass(frozen=True, slots=True)
class StoredLease:
    """A Lease as read back: its record and its resourceVersion (for the next update)."""

    record: LeaseRecord
    resource_version: str


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node's allocatable memory (bytes) and whether pods may be scheduled on it."""

    name: str
    allocatable_memory: str  # a Kubernetes Quantity string, e.g. "98123456Ki"
    schedulable: bool


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod of a model: the node it runs on (None while unscheduled) and whether it is live."""

    name: str
    node: str | None
    terminating: bool  # being deleted: holds its memory and node until it is gone
    finished: bool = False  # Succeeded or Failed: holds nothing


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An events.k8s.io/v1 Event about a Deployment."""

    namespace: str
    deployment: str
    reason: str  # a Reason value, CamelCase
    note: str  # a readable sentence (the API caps it at 1 kB)
    action: str  # what scaler did: Scale, ScaleFromZero, ...
    time: float
    reporting_instance: str
    type: str = "Normal"


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):  # a MicroTime the client left as text
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise TypeError(f"not a time: {value!r}")


def label_selector(selector: Any) -> str:
    """A V1LabelSelector as the string the list APIs take (``a=b,c in (d,e),!f``)."""
    if selector is None:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or ():
        key, operator, values = expression.key, expression.operator, expression.values or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class KubernetesApi:
    """The adapter's calls to the Kubernetes API, async, each bounded by `request_timeout`."""

    def __init__(self, api_client: k8s.ApiClient, *, request_timeout: float = 5.0) -> None:
        self._apps = k8s.AppsV1Api(api_client)
        self._coordination = k8s.CoordinationV1Api(api_client)
        self._events = k8s.EventsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._timeout = request_timeout

    async def _call(
        self, operation: str, call: Callable[..., object], *args: Any, **kw: Any
    ) -> Any:
        """Run one client call in a thread; every failure becomes a KubernetesError.

        The result is the client's model object, typed Any on purpose: client 36 models are
        untyped and 37's are pydantic, and only attributes common to both are read here.
        """
        try:
            return await asyncio.to_thread(call, *args, _request_timeout=self._timeout, **kw)
        except ApiException as exc:
            raise KubernetesError(operation, exc.status, _status_message(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesError(operation, None, str(exc) or type(exc).__name__) from None

    async def read_deployment(self, namespace: str, name: str) -> DeploymentView:
        """The Deployment's requested and ready replicas, selector and annotations."""
        d = await self._call(
            f"get deployment {namespace}/{name}",
            self._apps.read_namespaced_deployment,
            name,
            namespace,
        )
        return DeploymentView(
            namespace=namespace,
            name=name,
            replicas=int(d.spec.replicas if d.spec.replicas is not None else 1),
            ready_replicas=int((d.status and d.status.ready_replicas) or 0),
            selector=label_selector(d.spec.selector),
            annotations=dict(d.metadata.annotations or {}),
            resource_version=str(d.metadata.resource_version or ""),
        )

    async def read_scale(self, namespace: str, name: str) -> ScaleView:
        """The Deployment's scale subresource (replicas and resourceVersion)."""
        s = await self._call(
            f"get deployment {namespace}/{name} scale",
            self._apps.read_namespaced_deployment_scale,
            name,
            namespace,
        )
        return ScaleView(
            replicas=int(s.spec.replicas or 0) if s.spec else 0,
            resource_version=str(s.metadata.resource_version or ""),
        )

    async def patch_scale(
        self, namespace: str, name: str, replicas: int, *, resource_version: str
    ) -> ScaleView:
        """Set spec.replicas through the scale subresource, if resourceVersion still matches.

        The resourceVersion in the patch is a precondition: the API server answers 409 when
        the Deployment changed since it was read, so we never write over a change we have
        not seen (for example the HPA's).
        """
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        s = await self._call(
            f"patch deployment {namespace}/{name} scale",
            self._apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            body,
            _content_type=MERGE_PATCH,
        )
        return ScaleView(
            replicas=int(s.spec.replicas or 0) if s.spec else 0,
            resource_version=str(s.metadata.resource_version or ""),
        )

    async def patch_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        """Merge `annotations` into the Deployment's metadata.annotations (no precondition)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        await self._call(
            f"patch deployment {namespace}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            namespace,
            body,
            _content_type=MERGE_PATCH,
        )

    async def read_lease(self, namespace: str, name: str) -> StoredLease | None:
        """The Lease, or None when it does not exist yet."""
        try:
            lease = await self._call(
                f"get lease {namespace}/{name}",
                self._coordination.read_namespaced_lease,
                name,
                namespace,
            )
        except KubernetesError as exc:
            if exc.status == 404:
                return None
            raise
        return _stored_lease(lease)

    async def create_lease(self, namespace: str, name: str, record: LeaseRecord) -> StoredLease:
        """Create the Lease; 409 (AlreadyExists) when another replica created it first."""
        lease = await self._call(
            f"create lease {namespace}/{name}",
            self._coordination.create_namespaced_lease,
            namespace,
            _lease_body(namespace, name, record, None),
        )
        return _stored_lease(lease)

    async def replace_lease(
        self, namespace: str, name: str, record: LeaseRecord, *, resource_version: str
    ) -> StoredLease:
        """Update the Lease; 409 when it changed since `resource_version` (we lost a race)."""
        lease = await self._call(
            f"update lease {namespace}/{name}",
            self._coordination.replace_namespaced_lease,
            name,
            namespace,
            _lease_body(namespace, name, record, resource_version),
        )
        return _stored_lease(lease)

    async def create_event(self, event: EventRecord) -> None:
        """Post an events.k8s.io/v1 Event regarding the Deployment."""
        when = _utc(event.time)
        body = k8s.EventsV1Event(
            api_version="events.k8s.io/v1",
            kind="Event",
            metadata=k8s.V1ObjectMeta(
                # client-go names events "<object>.<unix nanoseconds in hex>".
                name=f"{event.deployment}.{int(event.time * 1e9):x}",
                namespace=event.namespace,
            ),
            event_time=when,
            reason=event.reason,
            note=event.note[:1024],
            action=event.action,
            type=event.type,
            reporting_controller="scaler.dev/scaler",
            reporting_instance=event.reporting_instance[:128],
            regarding=k8s.V1ObjectReference(
                api_version="apps/v1",
                kind="Deployment",
                name=event.deployment,
                namespace=event.namespace,
            ),
        )
        await self._call(
            f"create event {event.namespace}/{event.deployment}",
            self._events.create_namespaced_event,
            event.namespace,
            body,
        )

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data."""
        cm = await self._call(
            f"get configmap {namespace}/{name}",
            self._core.read_namespaced_config_map,
            name,
            namespace,
        )
        return dict(cm.data or {})

    async def list_nodes(self) -> tuple[NodeView, ...]:
        """Every node with its allocatable memory."""
        nodes = await self._call("list nodes", self._core.list_node)
        return tuple(
            NodeView(
                name=n.metadata.name,
                allocatable_memory=str(
                    ((n.status and n.status.allocatable) or {}).get("memory", "0")
                ),
                schedulable=not (n.spec and n.spec.unschedulable),
            )
            for n in nodes.items
        )

    async def list_pods(self, namespace: str, selector: str) -> tuple[PodView, ...]:
        """The pods matching `selector` in `namespace`."""
        pods = await self._call(
            f"list pods {namespace} {selector}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return tuple(
            PodView(
                name=p.metadata.name,
                node=(p.spec.node_name if p.spec else None) or None,
                terminating=p.metadata.deletion_timestamp is not None,
                finished=p.status is not None and p.status.phase in ("Succeeded", "Failed"),
            )
            for p in pods.items
        )


def _lease_body(
    namespace: str, name: str, record: LeaseRecord, resource_version: str | None
) -> k8s.V1Lease:
    return k8s.V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=namespace, resource_version=resource_version
        ),
        spec=k8s.V1LeaseSpec(
            holder_identity=record.holder_identity,
            lease_duration_seconds=record.lease_duration_seconds,
            acquire_time=None if record.acquire_time is None else _utc(record.acquire_time),
            renew_time=None if record.renew_time is None else _utc(record.renew_time),
            lease_transitions=record.lease_transitions,
        ),
    )


def _stored_lease(lease: Any) -> StoredLease:
    spec = lease.spec
    return StoredLease(
        record=LeaseRecord(
            holder_identity=(spec.holder_identity or None) if spec else None,
            lease_duration_seconds=int((spec and spec.lease_duration_seconds) or 0),
            acquire_time=_seconds(spec.acquire_time) if spec else None,
            renew_time=_seconds(spec.renew_time) if spec else None,
            lease_transitions=int((spec and spec.lease_transitions) or 0),
        ),
        resource_version=str(lease.metadata.resource_version or ""),
    )


def _status_message(exc: ApiException) -> str:
    """The `message` of the Status object in the body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason or "")
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, str):
        return message
    return str(exc.reason or "")
