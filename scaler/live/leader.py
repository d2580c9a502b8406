"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Several adapter replicas run; all compute decisions and serve the API, one actuates and
persists state: the holder of the Lease. The algorithm follows client-go
(``tools/leaderelection``):

- acquire: create the Lease, or take it over when its holder is empty (released) or the
  record has not changed for ``leaseDurationSeconds`` *as observed by us* (our clock, not the
  holder's renewTime, so clock skew between nodes does not matter); a takeover increments
  ``leaseTransitions`` and sets ``acquireTime``;
- renew: the holder rewrites ``renewTime`` every `step()` (the serve command steps every
  ``retry_seconds``, 2 s);
- every write carries the resourceVersion read just before it: a 409 means another replica
  wrote first, and we lost the race;
- we stop acting as leader as soon as ``renew_deadline_seconds`` (10 s) pass without a
  successful renewal, before anybody else may take over (15 s);
- `release()` on shutdown empties holderIdentity so the next replica takes over at once.

The clock is injected (`clock() -> Unix seconds`), so tests step time instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from scaler.live.kube import KubernetesApi, KubernetesError, LeaseRecord, StoredLease

LEASE_DURATION_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10.0
RETRY_SECONDS = 2.0

_log = structlog.get_logger("scaler.live.leader")


class LeaderElector:
    """Acquires and renews one Lease for `identity`; `is_leader` says whether to actuate."""

    def __init__(
        self,
        *,
        api: KubernetesApi,
        namespace: str,
        name: str,
        identity: str,
        clock: Callable[[], float],
        lease_duration_seconds: int = LEASE_DURATION_SECONDS,
        renew_deadline_seconds: float = RENEW_DEADLINE_SECONDS,
    ) -> None:
        if renew_deadline_seconds >= lease_duration_seconds:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._clock = clock
        self._duration = lease_duration_seconds
        self._deadline = renew_deadline_seconds
        self._observed: StoredLease | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # our last successful acquire/renew

    @property
    def is_leader(self) -> bool:
        """Whether we hold the lease now (renewed within the renew deadline)."""
        return self._renewed_at is not None and self._clock() - self._renewed_at < self._deadline

    async def step(self) -> bool:
        """One acquire-or-renew attempt; returns whether we are the leader after it."""
        was_leader = self.is_leader
        try:
            await self._try_acquire_or_renew()
        except KubernetesError as exc:
            if exc.conflict:
                _log.info("lease_race_lost", lease=self._where(), identity=self.identity)
            else:
                _log.warning(
                    "lease_write_failed",
                    lease=self._where(),
                    identity=self.identity,
                    error=str(exc),
                    status=exc.status,
                )
        leader = self.is_leader
        if leader != was_leader:
            _log.info(
                "leader_acquired" if leader else "leader_lost",
                lease=self._where(),
                identity=self.identity,
            )
        return leader

    async def _try_acquire_or_renew(self) -> None:
        now = self._clock()
        current = await self._api.read_lease(self.namespace, self.name)
        if current is None:
            record = LeaseRecord(
                holder_identity=self.identity,
                lease_duration_seconds=self._duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            )
            self._remember(await self._api.create_lease(self.namespace, self.name, record), now)
            self._renewed_at = now
            return
        if self._observed is None or current.record != self._observed.record:
            self._observed, self._observed_at = current, now
        held_by = current.record.holder_identity
        if held_by == self.identity:
            record = replace(current.record, renew_time=now, lease_duration_seconds=self._duration)
        elif held_by and now < self._observed_at + current.record.lease_duration_seconds:
            self._renewed_at = None  # someone else holds a valid lease
            return
        else:
            record = LeaseRecord(
                holder_identity=self.identity,
                lease_duration_seconds=self._duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=current.record.lease_transitions + 1,
            )
            if held_by:
                _log.info(
                    "lease_expired_takeover",
                    lease=self._where(),
                    identity=self.identity,
                    previous_holder=held_by,
                )
        stored = await self._api.replace_lease(
            self.namespace, self.name, record, resource_version=current.resource_version
        )
        self._remember(stored, now)
        self._renewed_at = now

    def _remember(self, stored: StoredLease, now: float) -> None:
        self._observed, self._observed_at = stored, now

    async def release(self) -> None:
        """Give the lease up (shutdown): holder emptied, so another replica takes over now."""
        if not self.is_leader:
            return
        self._renewed_at = None
        now = self._clock()
        try:
            current = await self._api.read_lease(self.namespace, self.name)
            if current is None or current.record.holder_identity != self.identity:
                return
            record = replace(
                current.record, holder_identity=None, lease_duration_seconds=1, renew_time=now
            )
            await self._api.replace_lease(
                self.namespace, self.name, record, resource_version=current.resource_version
            )
            _log.info("lease_released", lease=self._where(), identity=self.identity)
        except KubernetesError as exc:
            _log.warning("lease_release_failed", lease=self._where(), error=str(exc))

    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"
