"""Fixtures for the live adapter: the Kubernetes API stand-in, a fake source, a virtual clock.

The fake source stands in for scaler.sources.PrometheusSource where a test is about the
loop's reaction to a source behaviour (down, slow, garbage); the end-to-end tests in
tests/integration use the real source against a real Prometheus.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from scaler.api.store import DecisionStore
from scaler.core import Engine, ModelPolicy, Signal
from scaler.live.actuator import Actuator
from scaler.live.cluster_reader import ClusterReader
from scaler.live.kube import KubernetesApi
from scaler.live.leader import LeaderElector
from scaler.live.loop import ControlLoop, KubernetesSide, NoMetrics, TickResult
from scaler.policy import load_policies
from scaler.sources import ModelReading, QueryStat, ReplicaCount, SourceReading
from tests.builders import POLICIES
from tests.live.kube_standin import KubeStandIn

NAMESPACE = "cortex"
LEASE_NAMESPACE = "scaler-system"
START = 1_800_000_000.0  # a fixed Unix time: the virtual clock starts here
MODELS = ("deepseek-coder", "mistral-7b", "mixtral-8x7b", "tinyllama")


class VirtualClock:
    """Unix seconds that only move when the test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class FakeSource:
    """A metrics source whose answers the test sets: values, down, slow or garbage.

    Every model reads 0 on every signal unless `load` says otherwise; samples are stamped with
    the virtual clock's time.
    """

    clock: Callable[[], float]
    load: dict[str, dict[Signal, float]] = field(default_factory=dict)
    replicas: dict[str, ReplicaCount] = field(default_factory=dict)
    down: bool = False
    slow: bool = False
    garbage: bool = False
    reads: int = 0
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, model: str, **values: float) -> None:
        """Set signal values for `model` by Signal value name (queue_depth=2, ...)."""
        self.load[model] = {Signal(k): v for k, v in values.items()}

    async def read(self, policies: Sequence[ModelPolicy]) -> SourceReading:
        """All models' signals now, or the configured fault."""
        self.reads += 1
        if self.down:
            raise ConnectionRefusedError("connection refused (fake Prometheus is down)")
        if self.slow:
            await self._never.wait()
        now = self.clock()
        if self.garbage:
            models = {p.model: ModelReading(dict.fromkeys(Signal, math.nan), now) for p in policies}
            queries = tuple(
                QueryStat(s, Engine.LLAMACPP, 0.001, "bad_data: unparsable response")
                for s in Signal
            )
            return SourceReading(models, queries)
        models = {
            p.model: ModelReading({s: self.load.get(p.model, {}).get(s, 0.0) for s in Signal}, now)
            for p in policies
        }
        return SourceReading(models, tuple(QueryStat(s, Engine.VLLM, 0.001, None) for s in Signal))

    async def replica_counts(self, policies: Sequence[ModelPolicy]) -> dict[str, ReplicaCount]:
        """Replica counts as Prometheus would give them (for --no-kubernetes)."""
        if self.down:
            raise ConnectionRefusedError("connection refused (fake Prometheus is down)")
        return dict(self.replicas)


@pytest.fixture
def policies() -> list[ModelPolicy]:
    """The four shipped policies."""
    return load_policies(POLICIES)


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock at START."""
    return VirtualClock()


@pytest.fixture
def source(clock: VirtualClock) -> FakeSource:
    """A fake source reading zeros everywhere."""
    return FakeSource(clock=clock)


def seed_homelab(standin: KubeStandIn, *, mixtral: int = 0) -> None:
    """Three 96 GiB nodes, the four Deployments (always-on at 1 ready replica, Mixtral at
    `mixtral`), one pod per always-on model, and the front-proxy ConfigMap."""
    for i in (1, 2, 3):
        standin.add_node(f"ms01-{i}", memory="96Gi")
    for i, model in enumerate(MODELS):
        replicas = mixtral if model == "mixtral-8x7b" else 1
        standin.add_deployment(NAMESPACE, model, replicas=replicas, labels={"app": model})
        for r in range(replicas):
            node = f"ms01-{i % 3 + 1}"
            standin.add_pod(NAMESPACE, f"{model}-{r}", labels={"app": model}, node=node)
    standin.add_config_map(
        "kube-system",
        "extension-apiserver-authentication",
        {"requestheader-allowed-names": '["front-proxy-client"]'},
    )


@pytest.fixture
async def standin() -> AsyncIterator[KubeStandIn]:
    """A started stand-in seeded with the homelab."""
    server = KubeStandIn()
    seed_homelab(server)
    await server.start()
    yield server
    await server.close()


@dataclass
class Adapter:
    """One adapter replica wired to the stand-in, as `scaler serve` wires it."""

    loop: ControlLoop
    store: DecisionStore
    api: KubernetesApi
    elector: LeaderElector
    identity: str

    async def tick(self) -> TickResult:
        """One leader-election step, then one control tick."""
        await self.elector.step()
        return await self.loop.tick()


AdapterFactory = Callable[..., Adapter]


@pytest.fixture
def make_adapter(
    standin: KubeStandIn,
    policies: list[ModelPolicy],
    clock: VirtualClock,
    source: FakeSource,
) -> AdapterFactory:
    """Build an adapter replica against the stand-in (identity, source and timeouts optional)."""

    def build(
        identity: str = "scaler-a",
        *,
        adapter_source: FakeSource | None = None,
        request_timeout: float = 5.0,
        read_timeout: float = 1.0,
        metrics: NoMetrics | None = None,
        staleness: float = 60.0,
    ) -> Adapter:
        api = KubernetesApi(
            standin.api_client(user_agent=identity), request_timeout=request_timeout
        )
        elector = LeaderElector(
            api=api, namespace=LEASE_NAMESPACE, name="scaler", identity=identity, clock=clock
        )
        store = DecisionStore([p.model for p in policies], staleness_seconds=staleness)
        used_metrics = metrics or NoMetrics()
        loop = ControlLoop(
            policies=policies,
            source=adapter_source or source,
            store=store,
            clock=clock,
            metrics=used_metrics,
            kubernetes=KubernetesSide(
                api=api,
                reader=ClusterReader(api=api),
                actuator=Actuator(api=api, metrics=used_metrics, identity=identity, clock=clock),
                elector=elector,
            ),
            read_timeout=read_timeout,
        )
        return Adapter(loop=loop, store=store, api=api, elector=elector, identity=identity)

    return build
