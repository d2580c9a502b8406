"""Loopback HTTP endpoints serving metrics for Prometheus to scrape: prometheus_client
registries, and the cluster's own series for the model pods (cAdvisor, kube-state-metrics)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from scaler.api.selfmetrics import EXPOSITION_CONTENT_TYPE
from scaler.core import ModelPolicy
from tests.builders import ROOT

GIB = 1024**3
SLO_COST_RULES = ROOT / "manifests" / "monitoring" / "prometheus-rule-slo-cost.yaml"


class RegistryEndpoint:
    """Serves the concatenated exposition of `expositions` at any path (threaded, 127.0.0.1).

    `lock` is held while rendering, so a feeder thread can update several series atomically.
    """

    def __init__(self, *expositions: Callable[[], bytes]) -> None:
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint.lock:
                    body = b"".join(render() for render in expositions)
                self.send_response(200)
                self.send_header("Content-Type", EXPOSITION_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: Prometheus scrapes every second."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ClusterExporter:
    """The cluster's own series for the model pods, under their real names and labels: the
    kubelet's cAdvisor (``container_memory_working_set_bytes``,
    ``container_cpu_usage_seconds_total``, with the pod cgroup's ``container=""`` and the
    pause container's ``POD`` series a query must not count), kube-state-metrics
    (``kube_pod_container_resource_requests``, ``kube_pod_status_ready``) and vLLM's
    ``vllm:request_queue_time_seconds`` histogram (relabeled with ``namespace`` and
    ``model`` as the model ServiceMonitor does). Counters advance with the clock, so rates
    are real. Serve `exposition` with a RegistryEndpoint and scrape it without target labels
    (honor_labels, as kube-prometheus-stack scrapes kube-state-metrics)."""

    def __init__(
        self,
        pods: Mapping[str, tuple[str, float]],
        *,
        vllm_models: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`pods` maps pod name to (model, memory request in GiB)."""
        self.pods = dict(pods)
        self.vllm_models = tuple(vllm_models)
        self._clock = clock
        self._start = clock()

    def exposition(self) -> bytes:
        """The series now, in the Prometheus text format 0.0.4."""
        elapsed = self._clock() - self._start
        lines: list[str] = []

        def family(name: str, kind: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
            lines.append(f"# TYPE {name} {kind}")
            for sample, labels, value in samples:
                text = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"{sample}{{{text}}} {value!r}")

        memory, cpu, requests, ready = [], [], [], []
        for pod, (_model, gib) in self.pods.items():
            base = {"namespace": "cortex", "pod": pod}
            for container, share in (("server", 1.0), ("", 1.0), ("POD", 0.001)):
                labels = {**base, "container": container}
                memory.append(
                    ("container_memory_working_set_bytes", labels, gib * 0.8 * GIB * share)
                )
                cpu.append(("container_cpu_usage_seconds_total", labels, 1.5 * elapsed * share))
            node = {"node": "ms01-1", "container": "server", **base}
            requests.append(
                (
                    "kube_pod_container_resource_requests",
                    {**node, "resource": "memory", "unit": "byte"},
                    gib * GIB,
                )
            )
            requests.append(
                (
                    "kube_pod_container_resource_requests",
                    {**node, "resource": "cpu", "unit": "core"},
                    2.0,
                )
            )
            for condition, value in (("true", 1.0), ("false", 0.0), ("unknown", 0.0)):
                ready.append(("kube_pod_status_ready", {**base, "condition": condition}, value))
        family("container_memory_working_set_bytes", "gauge", memory)
        family("container_cpu_usage_seconds_total", "counter", cpu)
        family("kube_pod_container_resource_requests", "gauge", requests)
        family("kube_pod_status_ready", "gauge", ready)
        queue: list[tuple[str, dict[str, str], float]] = []
        name = "vllm:request_queue_time_seconds"
        for model in self.vllm_models:
            labels = {"namespace": "cortex", "model": model, "model_name": model, "engine": "0"}
            count = 2.0 * elapsed  # 2 requests/s, 90 % within 10 s
            for bound, share in ((5.0, 0.8), (10.0, 0.9), (15.0, 1.0)):
                queue.append((f"{name}_bucket", {**labels, "le": f"{bound}"}, count * share))
            queue.append((f"{name}_bucket", {**labels, "le": "+Inf"}, count))
            queue.append((f"{name}_count", labels, count))
            queue.append((f"{name}_sum", labels, count * 3.0))
        family(name, "histogram", queue)
        return ("\n".join(lines) + "\n").encode()


def recording_rules_file(directory: Path) -> Path:
    """scaler's recording rules (the PrometheusRule's spec.groups) as a Prometheus rule file
    in `directory`, for a test Prometheus to evaluate."""
    groups = yaml.safe_load(SLO_COST_RULES.read_text())["spec"]["groups"]
    path = directory / "scaler-slo-cost.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def model_pods(policies: Iterable[ModelPolicy]) -> dict[str, tuple[str, float]]:
    """One pod per model, named as its Deployment's pods are: pod -> (model, memory GiB)."""
    return {
        f"{p.target.deployment}-5d8f7c9b4-x2k4p": (p.model, p.placement.memory_gib)
        for p in policies
    }
