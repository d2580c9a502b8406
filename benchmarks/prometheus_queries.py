"""Prometheus queries and read() wall time per tick, for 4, 100 and 1,000 models.

A real Prometheus (the integration harness) scrapes one exporter that serves the series of
every model: half vLLM, half llama.cpp, colon names, each with its `model` label, plus the
activator's pending gauge and forwarded counter. For each fleet size it runs several ticks
of `PrometheusSource.read()` and prints, per tick: the queries the source sent (its
QueryStats), the /api/v1/query requests Prometheus itself counted, and the median and max
wall time. The baseline, measured in the same run, is the naive design this replaces: one
read per model (one query per signal per model), for 4 and 100 models.

    python benchmarks/prometheus_queries.py [--ticks N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scaler.core import ModelPolicy, Signal
from scaler.sources import PrometheusSource
from tests.builders import make_policy
from tests.integration.model_servers import StaticExporter
from tests.integration.prometheus import PrometheusServer, ScrapeTarget

SIZES = (4, 100, 1000)
WINDOW = "5s"


def fleet(models: int) -> list[ModelPolicy]:
    """`models` policies, alternately vLLM and llama.cpp, named m-0, m-1, ..."""
    vllm, llamacpp = make_policy("mistral-7b"), make_policy("tinyllama")
    return [
        (vllm if i % 2 == 0 else llamacpp).model_copy(
            update={"model": f"m-{i}", "matchers": ('namespace="cortex"', f'model="m-{i}"')}
        )
        for i in range(models)
    ]


def export_fleet(exporter: StaticExporter, models: int) -> None:
    """Series for `models` models on one exporter (labels as relabeling would attach them)."""
    for i in range(models):
        labels = {"namespace": "cortex", "model": f"m-{i}"}
        if i % 2 == 0:
            exporter.set_value("vllm:num_requests_waiting", i % 5, **labels)
            exporter.set_value("vllm:num_requests_running", i % 3, **labels)
            exporter.set_rate("vllm:generation_tokens_total", 10.0 + i % 7, **labels)
            exporter.set_rate("vllm:request_success_total", 0.5, finished_reason="stop", **labels)
        else:
            exporter.set_value("llamacpp:requests_deferred", i % 4, **labels)
            exporter.set_value("llamacpp:requests_processing", i % 2, **labels)
            exporter.set_rate("llamacpp:tokens_predicted_total", 5.0 + i % 3, **labels)
            exporter.set_rate("scaler_activator_forwarded_total", 0.1, model=f"m-{i}")
        exporter.set_value("scaler_activator_pending_requests", 0, model=f"m-{i}")


async def measure(
    source: PrometheusSource,
    prometheus: PrometheusServer,
    policy_sets: Sequence[Sequence[ModelPolicy]],
    ticks: int,
) -> tuple[int, float, float, float, int]:
    """(queries sent, Prometheus-counted queries, median s, max s, models with all signals)
    per tick; a tick reads every set in `policy_sets` (one set = one read())."""
    durations: list[float] = []
    sent = counted = complete = 0
    for _ in range(ticks):
        before = await asyncio.to_thread(prometheus.query_count)
        started = time.perf_counter()
        readings = [await source.read(policies) for policies in policy_sets]
        durations.append(time.perf_counter() - started)
        after = await asyncio.to_thread(prometheus.query_count)
        sent = sum(len(r.queries) for r in readings)
        counted = after - before
        complete = sum(
            1 for r in readings for m in r.models.values() if len(m.signals) == len(Signal)
        )
    return sent, counted, statistics.median(durations), max(durations), complete


async def main(ticks: int) -> None:
    """Start Prometheus and the exporter, wait for full rate windows, print the table."""
    largest = max(SIZES)
    with StaticExporter() as exporter, PrometheusServer() as prometheus:
        export_fleet(exporter, largest)
        prometheus.reload([ScrapeTarget(exporter.address, {}, job="fleet")])
        await prometheus.wait_for_async(
            f'count_over_time(vllm:generation_tokens_total{{model="m-0"}}[{WINDOW}]) >= 5',
            timeout=60,
        )
        series = (await prometheus.wait_for_async('count({__name__=~"vllm:.*|llamacpp:.*"})'))[0]
        print(f"Prometheus {prometheus.url}: {int(series.value)} engine series, window {WINDOW}")
        print(f"{'models':>7} {'design':<10} {'queries/tick':>12} {'seen by Prom':>12} "
              f"{'read() p50':>11} {'max':>9} {'complete':>9}")  # fmt: skip
        async with PrometheusSource(url=prometheus.url, window=WINDOW, timeout=10.0) as source:
            for size in SIZES:
                policies = fleet(size)
                rows = [("batched", [policies])]
                if size <= 100:
                    rows.append(("per-model", [[p] for p in policies]))
                for design, sets in rows:
                    sent, counted, p50, worst, complete = await measure(
                        source, prometheus, sets, ticks
                    )
                    print(f"{size:>7} {design:<10} {sent:>12} {counted:>12} "
                          f"{p50 * 1000:>9.1f}ms {worst * 1000:>7.1f}ms {complete:>9}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5, help="ticks per fleet size (5)")
    asyncio.run(main(parser.parse_args().ticks))
