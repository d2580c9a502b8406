"""The Kubernetes calls the adapter makes are exactly `KUBERNETES_CALLS` (the RBAC contract).

A full run against the stand-in (start-up ConfigMap read, leader election, a Mixtral wake-up
with a conflict on the scale write, the idle scale-down, shutdown) records every request; the
recorded (verb, group, resource, subresource) set must be a subset of `KUBERNETES_CALLS`
(the code makes no call the RBAC does not list) and cover it (the list names no call the
code never makes). The manifests' Roles are checked against the same constant.
"""

from __future__ import annotations

from scaler.live.kube import KUBERNETES_CALLS, KubernetesCall
from scaler.live.serve import ServeOptions, front_proxy_config
from tests.live.conftest import NAMESPACE, AdapterFactory, FakeSource, VirtualClock
from tests.live.kube_standin import KubeStandIn

MIXTRAL = "mixtral-8x7b"


async def full_run(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> set[KubernetesCall]:
    """Drive every code path that talks to Kubernetes; the calls the stand-in received."""
    adapter = make_adapter()
    await front_proxy_config(ServeOptions(), adapter.api)
    await adapter.tick()
    source.set(MIXTRAL, queue_depth=1.0)
    standin.fail_next("patch", "deployments", "scale", status=409)
    clock.advance(5)
    await adapter.tick()
    standin.set_ready(NAMESPACE, MIXTRAL, 1)
    source.set(MIXTRAL)
    for _ in range(20):
        clock.advance(60)
        await adapter.tick()
    assert standin.deployment(NAMESPACE, MIXTRAL)["spec"]["replicas"] == 0
    assert adapter.elector is not None
    await adapter.elector.release()
    return {KubernetesCall(*request.call) for request in standin.requests}


async def test_recorded_calls_equal_the_declared_calls(
    make_adapter: AdapterFactory, standin: KubeStandIn, source: FakeSource, clock: VirtualClock
) -> None:
    """Every call made is declared, and every declared call is made."""
    recorded = await full_run(make_adapter, standin, source, clock)
    assert recorded - KUBERNETES_CALLS == set(), "calls missing from KUBERNETES_CALLS"
    assert KUBERNETES_CALLS - recorded == set(), "declared calls the code never made"
