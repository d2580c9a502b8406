"""Smoke tests of the harness: a real Prometheus scraping the emulated engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.model_servers import LlamaCppServer, Spelling, VllmServer
from tests.integration.prometheus import (
    PrometheusQueryError,
    PrometheusServer,
    ScrapeTarget,
    create_blocks,
)

pytestmark = pytest.mark.prometheus


def test_vllm_gauge_reaches_prometheus_with_colon_name(prometheus: PrometheusServer) -> None:
    """A value set on the vLLM emulator is queryable under its colon name, with target labels."""
    with (
        VllmServer(model_name="mistral-7b") as vllm,
        LlamaCppServer() as llamacpp,
        VllmServer(model_name="other", spelling=Spelling.UNDERSCORE) as underscore,
    ):
        vllm.set(waiting=7, running=2)
        llamacpp.set(waiting=3)
        underscore.set(waiting=5)
        prometheus.reload(
            [
                ScrapeTarget(vllm.address, {"namespace": "cortex", "model": "mistral-7b"}),
                ScrapeTarget(llamacpp.address, {"namespace": "cortex", "model": "tinyllama"}),
                ScrapeTarget(underscore.address, {"namespace": "cortex", "model": "other"}),
            ]
        )
        result = prometheus.wait_for('vllm:num_requests_waiting{model="mistral-7b"}')
        assert [s.value for s in result] == [7.0]
        assert result[0].labels["model_name"] == "mistral-7b"
        assert result[0].labels["namespace"] == "cortex"

        deferred = prometheus.wait_for('llamacpp:requests_deferred{model="tinyllama"}')
        assert [s.value for s in deferred] == [3.0]

        spelled = prometheus.wait_for('vllm_num_requests_waiting{model="other"}')
        assert [s.value for s in spelled] == [5.0]


def test_parse_error_is_http_400(prometheus: PrometheusServer) -> None:
    """A query that does not parse raises PrometheusQueryError with status 400."""
    with pytest.raises(PrometheusQueryError) as caught:
        prometheus.check_query("sum by (model)(")
    assert caught.value.status == 400


def test_backfilled_blocks_are_queryable(tmp_path: Path) -> None:
    """Series backfilled with promtool are served by a Prometheus started on those blocks."""
    start = 1_790_000_000  # a fixed instant: the data is old, queries pass `at`
    lines = ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [
        f'vllm:num_requests_waiting{{model="mistral-7b"}} {i % 4} {start + 15 * i}'
        for i in range(20)
    ]
    create_blocks("\n".join(lines) + "\n# EOF\n", tmp_path / "tsdb")
    server = PrometheusServer.start_on_blocks(tmp_path / "tsdb")
    try:
        result = server.query('vllm:num_requests_waiting{model="mistral-7b"}', at=start + 15 * 6)
    finally:
        server.stop()
    assert [s.value for s in result] == [2.0]
    assert (tmp_path / "tsdb").is_dir()
