"""``--scale-on-wake``: scale a cold model's Deployment from 0 to 1 the moment a request is held.

Without it the wake-up goes through the metrics path (pending gauge → Prometheus → scaler's
control loop → scale), which costs a scrape interval and a tick. With it the activator writes
the Deployment's scale subresource itself, only ever from 0 to 1 (never down, never above 1:
the HPA and the control loop own every other number), at most once per cold start. It needs
RBAC ``get`` and ``patch`` on ``deployments/scale``; a 403 is logged once and the metrics path
still wakes the model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from scaler.activator.routes import ModelRoute

log = structlog.get_logger("scaler.activator")


class DeploymentWaker:
    """The hold hook that writes ``replicas: 1`` to a Deployment at 0 (official client, thread)."""

    def __init__(self, *, api_client: Any, retry_after_s: float = 30.0) -> None:
        self._api_client = api_client  # kubernetes.client.ApiClient
        self._retry_after = retry_after_s
        self._last: dict[str, float] = {}  # model -> loop time of the last attempt
        self._tasks: set[asyncio.Task[None]] = set()
        self._forbidden: set[str] = set()

    def __call__(self, route: ModelRoute) -> None:
        """Start one scale-up attempt for `route` unless one ran within ``retry_after_s``."""
        loop = asyncio.get_running_loop()
        last = self._last.get(route.model)
        if last is not None and loop.time() - last < self._retry_after:
            return
        self._last[route.model] = loop.time()
        task = loop.create_task(self._wake(route))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for attempts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _wake(self, route: ModelRoute) -> None:
        try:
            scaled = await asyncio.to_thread(self._scale_from_zero, route)
        except Exception as exc:  # any API failure: the metrics path still wakes the model
            status = getattr(exc, "status", None)
            if status == 403 and route.model not in self._forbidden:
                self._forbidden.add(route.model)
                log.warning(
                    "scale_on_wake_forbidden",
                    model=route.model,
                    deployment=f"{route.namespace}/{route.deployment}",
                    hint="grant get,patch on deployments/scale or drop --scale-on-wake",
                )
            elif status != 403:
                log.warning("scale_on_wake_failed", model=route.model, error=repr(exc))
            return
        if scaled:
            log.info("scaled_on_wake", model=route.model, replicas=1)

    def _scale_from_zero(self, route: ModelRoute) -> bool:
        from kubernetes import client  # only cluster mode needs it

        apps: Any = client.AppsV1Api(self._api_client)
        scale = apps.read_namespaced_deployment_scale(route.deployment, route.namespace)
        if (scale.spec.replicas or 0) > 0:
            return False  # already waking (or awake): never touch a non-zero count
        apps.patch_namespaced_deployment_scale(
            route.deployment,
            route.namespace,
            {"spec": {"replicas": 1}},
            field_manager="scaler-activator",
        )
        return True
