"""Every dashboard query runs on a real Prometheus and finds data.

Two sources of data, two tests per query:

* **registries**: Prometheus (1 s scrapes) scrapes the adapter's metrics registry
  (`scaler.api.selfmetrics.SelfMetrics`, fed with real `decide()` decisions for every
  shipped policy, Prometheus query timings with one signal failing, API requests with 503s,
  leadership, scale writes, cold starts) and the activator's (`ActivatorMetrics` holding,
  forwarding, timing out, rejecting) while they change: every query must return at least
  one sample, with errors, timeouts and rejections really non-zero. (The same queries
  against the running adapter: test_queries_adapter.py.)
* **backfill**: `scaler simulate --baseline scaler --openmetrics` (the bundled scenario),
  backfilled with `promtool tsdb create-blocks-from openmetrics`, Prometheus started on the
  blocks. Every query must return data there, except the few in `ADAPTER_INTERNAL`: they
  read the adapter's own API and Prometheus-client timings, which a simulation has not got
  (the simulator does not invent them); those must still parse and run. Likewise the
  queries of `CLUSTER_ONLY` panels that read only cAdvisor, kube-state-metrics or recording
  rule series (the live exporters above serve those under their real names, and Prometheus
  evaluates the real rules there).

Template variables are substituted as Grafana would for "All": ``$model`` -> ``.+``,
``$__rate_interval`` -> ``1m``, ``$__range`` -> ``1h``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from scaler.activator.metrics import ActivatorMetrics, RejectReason
from scaler.api.selfmetrics import SelfMetrics
from scaler.cli import app
from scaler.core import Engine, Signal
from scaler.dashboards import queries as q
from tests.builders import Driver, homelab, make_policy, signals
from tests.dashboards.exporters import (
    ClusterExporter,
    RegistryEndpoint,
    model_pods,
    recording_rules_file,
)
from tests.dashboards.panel_queries import IDS, QUERIES
from tests.deploy.objects import policies
from tests.deploy.promql import series_names
from tests.integration.prometheus import (
    PrometheusServer,
    ScrapeTarget,
    create_blocks,
    prometheus_binary,
)

pytestmark = pytest.mark.prometheus

WAIT_SECONDS = 30.0


def _require_prometheus() -> None:
    if prometheus_binary() is None:
        pytest.fail(
            "Prometheus is not installed: apt-get install -y --no-install-recommends "
            "prometheus (scripts/test does it when run as root)",
            pytrace=False,
        )


# --- live: the adapter's and the activator's registries, scraped while they change --------


class _Exporters:
    """SelfMetrics + ActivatorMetrics fed from a background thread, served over HTTP."""

    def __init__(self) -> None:
        self.adapter = SelfMetrics()
        self.activator = ActivatorMetrics(tuple(sorted(policies())))
        self.drivers = {
            model: Driver(
                make_policy(model),
                load=lambda now: signals(queue=3, tokens=40 + now, inflight=6, rate=0.5),
                cluster=homelab(),  # known nodes: decisions carry a placement cap
            )
            for model in policies()
        }
        self._stop = threading.Event()
        self.endpoint = RegistryEndpoint(self.adapter.exposition, self.activator.exposition)
        shipped = policies().values()
        vllm = [p.model for p in shipped if p.engine is Engine.VLLM]
        self.cluster = RegistryEndpoint(
            ClusterExporter(model_pods(shipped), vllm_models=vllm).exposition
        )
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def start(self) -> None:
        self.endpoint.start()
        self.cluster.start()
        self._feeder.start()

    def stop(self) -> None:
        self._stop.set()
        self._feeder.join(timeout=5)
        self.endpoint.stop()
        self.cluster.stop()

    def _tick(self, tick: int) -> None:
        adapter, activator = self.adapter, self.activator
        for driver in self.drivers.values():
            adapter.observe_decision(driver.step(), driver.policy)
            adapter.observe_data_age(driver.policy.model, 2.0 + tick % 3)
        for signal in Signal:
            # One signal's queries fail now and then: the error panels get real errors.
            error = signal is Signal.REQUEST_RATE and tick % 2 == 0
            adapter.observe_query(signal.value, 0.004 * (1 + tick % 5), error)
        path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
        adapter.observe_api_request(path, 200, 0.0004)
        adapter.observe_api_request(path, 503 if tick % 4 == 0 else 200, 0.0002)
        adapter.set_leader(True)
        adapter.mark_tick(time.time())
        adapter.observe_scale_write("mixtral-8x7b", "ok")
        adapter.observe_cold_start("mixtral-8x7b", 55.0 + tick)
        activator.pending.labels(model="mixtral-8x7b").set(tick % 4)
        activator.wait.labels(model="mixtral-8x7b").observe(40.0 + tick)
        activator.forwarded.labels(model="mixtral-8x7b").inc()
        activator.timeouts.labels(model="mixtral-8x7b").inc(tick % 2)
        activator.rejected.labels(model="mixtral-8x7b", reason=RejectReason.QUEUE_FULL.value).inc()

    def _feed(self) -> None:
        tick = 0
        while not self._stop.is_set() and tick < 10_000:  # bounded: ~80 min at 0.5 s
            with self.endpoint.lock:
                self._tick(tick)
            tick += 1
            self._stop.wait(0.5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping the live exporters every second and evaluating scaler's
    recording rules."""
    _require_prometheus()
    exporters = _Exporters()
    exporters.start()
    rules = recording_rules_file(tmp_path_factory.mktemp("rules"))
    server = PrometheusServer(rule_files=[rules])
    try:
        labels = {"namespace": "scaler-system"}
        server.start(
            [
                ScrapeTarget(exporters.endpoint.address, labels, "scaler"),
                # The cluster's series carry their own namespace and pod labels.
                ScrapeTarget(exporters.cluster.address, {}, "cluster"),
            ]
        )
        server.wait_for_targets(timeout=WAIT_SECONDS)
        yield server
    finally:
        server.stop()
        exporters.stop()


@pytest.mark.parametrize(("dashboard", "title", "expr"), QUERIES, ids=IDS)
def test_query_finds_data_while_scraping_live_exporters(
    live: PrometheusServer, dashboard: str, title: str, expr: str
) -> None:
    """The panel's query returns at least one sample from the live-scraped metrics."""
    live.wait_for(expr, bool, timeout=WAIT_SECONDS)


# --- backfill: a simulated run, as the simulator exports it -------------------------------


@pytest.fixture(scope="module")
def backfilled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrometheusServer, float, set[str]]]:
    """Prometheus on the blocks of `scaler simulate --openmetrics`, the export's last
    timestamp, and the metric families it holds."""
    _require_prometheus()
    work = tmp_path_factory.mktemp("backfill")
    export = work / "simulation.om"
    result = CliRunner().invoke(
        app, ["simulate", "--baseline", "scaler", "--openmetrics", str(export)]
    )
    assert result.exit_code == 0, result.output
    text = export.read_text()
    families = set(re.findall(r"^# TYPE (\S+) (\w+)", text, flags=re.M))
    names = set()
    for family, kind in families:
        names.add(family)
        if kind == "counter":
            names.add(f"{family}_total")
        if kind == "histogram":
            names |= {f"{family}_{s}" for s in ("bucket", "count", "sum")}
    last = max(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] not in "#")
    tsdb = work / "tsdb"
    create_blocks(text, tsdb)
    server = PrometheusServer.start_on_blocks(tsdb)
    try:
        yield server, last, names
    finally:
        server.stop()


ADAPTER_INTERNAL: dict[tuple[str, str], str] = {
    ("scaler-adapter-health.json", "Query latency by signal"): (
        "how long the adapter's HTTP queries to Prometheus take: the simulator reads its "
        "samples in memory, there is no query to time"
    ),
    ("scaler-adapter-health.json", "Query errors by signal"): (
        "failed Prometheus queries of the adapter: no queries in a simulation (a metrics "
        "outage is simulated as missing samples, shown by the signal and data-age panels)"
    ),
    ("scaler-adapter-health.json", "API latency (p95) by route and code"): (
        "latency of the external metrics API the HPA calls: no API server in a simulation"
    ),
    ("scaler-adapter-health.json", "API requests by code"): (
        "requests to the external metrics API: no API server in a simulation"
    ),
}
"""Panels (dashboard, title) that read adapter internals a simulation has not got, and why."""

CLUSTER_ONLY: dict[tuple[str, str], str] = {
    ("scaler-model-detail.json", "Memory per pod"): (
        "cAdvisor and kube-state-metrics series of real pods: the simulator's replicas have "
        "no cgroups (their memory is the policy's placement.memoryGiB, already in gib_hours)"
    ),
    ("scaler-model-detail.json", "CPU per pod"): "cAdvisor and kube-state-metrics, as above",
    ("scaler-model-detail.json", "Ready pods"): (
        "kube-state-metrics' pod conditions; the simulated ready count is on the Replicas panel"
    ),
    ("scaler-model-detail.json", "Live SLO attainment"): (
        "recording rules evaluated by a running Prometheus, not by backfill; the simulator "
        "reports the same figure itself (slo_attainment in --json)"
    ),
    ("scaler-model-detail.json", "Memory requested (GiB)"): (
        "a recording rule over kube-state-metrics; the simulator reports gib_hours itself"
    ),
    ("scaler-model-detail.json", "GiB-hours (range)"): "the same recording rule, over the range",
}
"""Panels reading the cluster's exporters or scaler's recording rules, which a backfilled
simulation has not got, and why. Unlike ADAPTER_INTERNAL, a query of such a panel that reads
any series the simulator exports must still find data."""


@pytest.mark.parametrize(("dashboard", "title", "expr"), QUERIES, ids=IDS)
def test_query_finds_data_on_a_backfilled_simulation(
    backfilled: tuple[PrometheusServer, float, set[str]], dashboard: str, title: str, expr: str
) -> None:
    """On the simulator's export the query runs and finds data, unless its panel is one of
    the documented adapter-internal ones."""
    server, last, exported = backfilled
    result = server.query(expr, at=last)
    exempt = (dashboard, title) in ADAPTER_INTERNAL or (
        (dashboard, title) in CLUSTER_ONLY and not series_names(expr) & exported
    )
    if not exempt:
        assert result, f"{dashboard} / {title}: no data for {expr}"


def test_cluster_only_panels_exist_and_read_what_a_simulation_lacks(
    backfilled: tuple[PrometheusServer, float, set[str]],
) -> None:
    """Each CLUSTER_ONLY panel is a panel with a query that reads no exported series, so the
    exemption covers only what a simulation cannot have."""
    _, _, exported = backfilled
    by_panel: dict[tuple[str, str], list[str]] = {}
    for name, title, expr in QUERIES:
        by_panel.setdefault((name, title), []).append(expr)
    for panel in CLUSTER_ONLY:
        assert panel in by_panel, f"{panel} is no longer a panel: drop it from CLUSTER_ONLY"
        assert any(not series_names(e) & exported for e in by_panel[panel]), panel


def test_adapter_internal_panels_read_no_exported_series(
    backfilled: tuple[PrometheusServer, float, set[str]],
) -> None:
    """Each exempt panel exists and reads only series the simulator does not export, so the
    exemption cannot hide a panel the export should fill."""
    _, _, exported = backfilled
    read: dict[tuple[str, str], set[str]] = {}
    for name, title, expr in QUERIES:
        read.setdefault((name, title), set()).update(series_names(expr))
    for panel in ADAPTER_INTERNAL:
        assert panel in read, f"{panel} is no longer a panel: drop it from ADAPTER_INTERNAL"
        assert not read[panel] & exported, panel


def test_substitution_leaves_no_template_variable() -> None:
    """Every query is plain PromQL once the variables are substituted."""
    for _, _, expr in QUERIES:
        assert not re.search(r"\$\{?[A-Za-z_]", expr), expr


def test_pod_queries_count_each_container_once(live: PrometheusServer) -> None:
    """Memory per pod is the server container's working set: the pod cgroup's series
    (container="") and the pause container's are left out, and the request is the policy's."""
    tinyllama = make_policy("tinyllama")
    pod = f"{tinyllama.target.deployment}-5d8f7c9b4-x2k4p"
    gib = tinyllama.placement.memory_gib * 1024**3
    for expr, expected in (
        (q.pod_memory_working_set(), 0.8 * gib),
        (q.pod_memory_request(), gib),
    ):
        expr = expr.replace("$model", "tinyllama")
        samples = live.wait_for(expr, bool, timeout=WAIT_SECONDS)
        assert {s.labels["pod"]: s.value for s in samples} == {pod: pytest.approx(expected)}
