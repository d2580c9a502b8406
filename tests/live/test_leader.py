"""Leader election on a coordination.k8s.io/v1 Lease, against the stand-in, on virtual time."""

from __future__ import annotations

import kubernetes_validate

from scaler.live.kube import KubernetesApi
from scaler.live.leader import LEASE_DURATION_SECONDS, LeaderElector
from tests.live.conftest import LEASE_NAMESPACE, VirtualClock
from tests.live.kube_standin import SCHEMA_VERSION, KubeStandIn


def elector(standin: KubeStandIn, clock: VirtualClock, identity: str) -> LeaderElector:
    """An elector for the shared lease `scaler-system/scaler`."""
    api = KubernetesApi(standin.api_client(), request_timeout=5.0)
    return LeaderElector(
        api=api, namespace=LEASE_NAMESPACE, name="scaler", identity=identity, clock=clock
    )


async def test_first_replica_creates_and_holds_the_lease(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """The first step creates a schema-valid Lease held by us for 15 s, 0 transitions."""
    a = elector(standin, clock, "scaler-a")
    assert await a.step()
    lease = standin.lease(LEASE_NAMESPACE, "scaler")
    assert lease is not None
    kubernetes_validate.validate(lease, SCHEMA_VERSION, strict=True)
    assert lease["spec"]["holderIdentity"] == "scaler-a"
    assert lease["spec"]["leaseDurationSeconds"] == LEASE_DURATION_SECONDS
    assert lease["spec"]["leaseTransitions"] == 0


async def test_second_replica_does_not_lead_while_the_lease_is_renewed(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """While A renews every few seconds, B never becomes leader, however long it waits."""
    a, b = elector(standin, clock, "scaler-a"), elector(standin, clock, "scaler-b")
    await a.step()
    for _ in range(10):
        clock.advance(5)
        assert await a.step()
        assert not await b.step()


async def test_renewal_moves_renew_time_and_keeps_acquire_time(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """A renewal rewrites renewTime only."""
    a = elector(standin, clock, "scaler-a")
    await a.step()
    first = standin.lease(LEASE_NAMESPACE, "scaler")
    clock.advance(2)
    await a.step()
    second = standin.lease(LEASE_NAMESPACE, "scaler")
    assert first is not None
    assert second is not None
    assert second["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert second["spec"]["renewTime"] != first["spec"]["renewTime"]


async def test_takeover_after_expiry_counts_a_transition(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """When A stops renewing, B takes over once leaseDurationSeconds have passed, not before."""
    a, b = elector(standin, clock, "scaler-a"), elector(standin, clock, "scaler-b")
    await a.step()
    assert not await b.step()  # B observes A's record now
    clock.advance(LEASE_DURATION_SECONDS - 1)
    assert not await b.step()
    clock.advance(2)
    assert await b.step()
    lease = standin.lease(LEASE_NAMESPACE, "scaler")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "scaler-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not a.is_leader  # A's renew deadline has long passed


async def test_release_hands_over_at_once(standin: KubeStandIn, clock: VirtualClock) -> None:
    """After A releases on shutdown, B acquires on its next step without waiting for expiry."""
    a, b = elector(standin, clock, "scaler-a"), elector(standin, clock, "scaler-b")
    await a.step()
    assert not await b.step()
    await a.release()
    clock.advance(1)
    assert await b.step()


async def test_losing_a_race_is_a_409_and_not_leadership(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """When the takeover write conflicts (someone else wrote first), we are not leader."""
    a, b = elector(standin, clock, "scaler-a"), elector(standin, clock, "scaler-b")
    await a.step()
    await b.step()
    clock.advance(LEASE_DURATION_SECONDS + 1)
    standin.fail_next("update", "leases", status=409)
    assert not await b.step()
    assert [r.status for r in standin.requests if r.verb == "update"][-1] == 409


async def test_leader_steps_down_when_renewals_keep_failing(
    standin: KubeStandIn, clock: VirtualClock
) -> None:
    """Renewals failing with 500 end our leadership after the renew deadline (10 s)."""
    a = elector(standin, clock, "scaler-a")
    await a.step()
    standin.fail_next("get", "leases", status=500, times=10)
    clock.advance(5)
    assert await a.step()  # still within the renew deadline
    clock.advance(6)
    assert not await a.step()
