"""Endpoint readiness: how many ready endpoints each model has, and who feeds that number.

``EndpointTracker`` is the one place the rest of the activator reads readiness from; it is
fed by exactly one source per model:

* ``EndpointSliceWatch`` (in a cluster): a watch on ``discovery.k8s.io/v1`` EndpointSlices
  labelled ``kubernetes.io/service-name=<service>``, counting endpoints whose
  ``conditions.ready`` is true (or unset, which the API defines as ready), summed over slices.
* ``HealthPoll`` (``--no-kubernetes`` or ``--upstream``): a poll of the model server's
  ``/health``; a 200 counts as one ready endpoint, anything else (llama.cpp answers 503 while
  loading, vLLM does not listen yet) as none. A failing check is logged once when it starts
  failing (``upstream_unhealthy``, with the error) and once when it recovers
  (``upstream_healthy``), so a held request's reason is in the log, not one line per poll.

Tests drive the tracker directly with ``set_ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
import structlog
from yarl import URL

from scaler.activator.routes import ModelRoute

log = structlog.get_logger("scaler.activator")

ReadyListener = Callable[[str, int], None]
"""Called with (model, ready endpoint count) whenever a model's count changes."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EndpointTracker:
    """Ready endpoint counts per model, with listeners told of every change."""

    def __init__(self) -> None:
        self._ready: dict[str, int] = {}
        self._listeners: list[ReadyListener] = []

    def ready(self, model: str) -> int:
        """Ready endpoints of `model` now (0 when never reported)."""
        return self._ready.get(model, 0)

    def set_ready(self, model: str, count: int) -> None:
        """Record `model`'s ready endpoint count; listeners hear only of changes."""
        count = max(0, count)
        if self._ready.get(model, 0) == count and model in self._ready:
            return
        before = self._ready.get(model, 0)
        self._ready[model] = count
        if (before == 0) != (count == 0):
            log.info("endpoints_changed", model=model, ready=count, before=before)
        for listener in list(self._listeners):
            listener(model, count)

    def listen(self, listener: ReadyListener) -> None:
        """Call `listener` on every change from now on."""
        self._listeners.append(listener)


class HealthProbe:
    """One GET of a model server's ``/health`` (llama.cpp: 503 while loading, 200 ok; vLLM:
    200 once serving, refused before): True only for a 200."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout_s: float = 2.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def healthy(self, upstream: URL) -> bool:
        """Whether the server at `upstream` answers ``/health`` with 200 now."""
        return await self.fault(upstream) is None

    async def fault(self, upstream: URL) -> str | None:
        """Why the server at `upstream` is not healthy now ("HTTP 503", "connection refused:
        ...", "timed out after 2 s"), or None when ``/health`` answers 200."""
        try:
            async with self._session.get(
                upstream.with_path("/health"), timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                return None if response.status == 200 else f"HTTP {response.status}"
        except TimeoutError:
            return f"timed out after {self._timeout.total:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"


class HealthPoll:
    """Readiness without Kubernetes: polls each route's ``/health`` and feeds the tracker."""

    def __init__(
        self,
        *,
        routes: Iterable[ModelRoute],
        tracker: EndpointTracker,
        probe: HealthProbe,
        interval_s: float = 1.0,
    ) -> None:
        self._routes = tuple(routes)
        self._tracker = tracker
        self._probe = probe
        self._interval = interval_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one poll task per route."""
        self._tasks = [asyncio.create_task(self._poll(r)) for r in self._routes]

    async def stop(self) -> None:
        """Cancel the polls and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _poll(self, route: ModelRoute) -> None:
        failing = False  # log a fault once when it starts and once when it ends, not per poll
        while True:
            fault = await self._probe.fault(route.upstream)
            if fault is not None and not failing:
                log.warning(
                    "upstream_unhealthy",
                    model=route.model,
                    upstream=str(route.upstream),
                    error=fault,
                    hint=f"requests for {route.model} are held (up to "
                    f"{route.hold_timeout_s:g} s each) until {route.upstream}/health answers 200",
                )
            elif fault is None and failing:
                log.info("upstream_healthy", model=route.model, upstream=str(route.upstream))
            failing = fault is not None
            self._tracker.set_ready(route.model, 0 if failing else 1)
            await asyncio.sleep(self._interval)


class EndpointSliceWatch:
    """Readiness in a cluster: watches the EndpointSlices of each route's Service.

    One watch per namespace (label selector ``kubernetes.io/service-name in (...)``), run by
    the official client in a thread; counts reach the tracker on the event loop. The watch is
    re-listed after an error or an expired resourceVersion (410), with a short back-off.
    """

    def __init__(
        self,
        *,
        routes: Iterable[ModelRoute],
        tracker: EndpointTracker,
        api_client: Any,  # kubernetes.client.ApiClient: the client ships no types
        retry_s: float = 2.0,
    ) -> None:
        self._tracker = tracker
        self._api_client = api_client
        self._retry = retry_s
        # (namespace, service) -> models (two policies may share one Service)
        self._models: dict[tuple[str, str], list[str]] = defaultdict(list)
        for route in routes:
            if not route.overridden:
                self._models[(route.namespace, route.service)].append(route.model)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: Any = None  # the current watch.Watch, stopped by stop()

    @property
    def namespaces(self) -> list[str]:
        """The namespaces watched, one watch each."""
        return sorted({ns for ns, _ in self._models})

    def start(self) -> None:
        """Start the watch threads (daemon threads: they must never keep the process up)."""
        self._loop = asyncio.get_running_loop()
        for namespace in self.namespaces:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"endpointslices-{namespace}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        """Ask the watches to end; the threads exit at their next event or timeout."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)

    def _publish(self, namespace: str, counts: Mapping[tuple[str, str], int]) -> None:
        assert self._loop is not None
        for key, models in self._models.items():
            if key[0] != namespace:
                continue
            for model in models:
                self._loop.call_soon_threadsafe(self._tracker.set_ready, model, counts.get(key, 0))

    def _run(self, namespace: str) -> None:
        from kubernetes import client, watch  # imported here: only cluster mode needs it

        # Any: the generated models type every field optional, and watch.Watch is untyped.
        api: Any = client.DiscoveryV1Api(self._api_client)
        watch_class: Any = watch.Watch
        services = sorted(svc for ns, svc in self._models if ns == namespace)
        selector = f"{SERVICE_NAME_LABEL} in ({','.join(services)})"
        while not self._stop.is_set():
            slices: dict[str, tuple[str, int]] = {}  # slice name -> (service, ready count)
            try:
                listing = api.list_namespaced_endpoint_slice(namespace, label_selector=selector)
                for item in listing.items:
                    slices[item.metadata.name] = slice_readiness(item)
                self._publish(namespace, _sum(namespace, slices))
                w = watch_class()
                self._watch = w
                for event in w.stream(
                    api.list_namespaced_endpoint_slice,
                    namespace,
                    label_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                ):
                    if self._stop.is_set():
                        break
                    kind, item = event["type"], event["object"]
                    if kind == "ERROR":
                        break  # 410 Gone and friends: list again
                    if kind == "DELETED":
                        slices.pop(item.metadata.name, None)
                    else:
                        slices[item.metadata.name] = slice_readiness(item)
                    self._publish(namespace, _sum(namespace, slices))
            except Exception as exc:  # any API or network failure: log, back off, list again
                if self._stop.is_set():
                    break
                log.warning("endpointslice_watch_failed", namespace=namespace, error=str(exc))
                self._stop.wait(self._retry)


def slice_readiness(item: Any) -> tuple[str, int]:
    """(service name, ready endpoints) of one ``V1EndpointSlice``; pure.

    A missing ``ready`` condition counts as ready, as the EndpointSlice API defines it.
    """
    labels = item.metadata.labels or {}
    ready = 0
    for endpoint in item.endpoints or ():
        conditions = endpoint.conditions
        if conditions is None or conditions.ready is None or conditions.ready:
            ready += 1
    return str(labels.get(SERVICE_NAME_LABEL, "")), ready


def _sum(namespace: str, slices: Mapping[str, tuple[str, int]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for service, ready in slices.values():
        counts[(namespace, service)] += ready
    return counts
