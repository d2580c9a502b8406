"""Smoke tests of the harness: a real Prometheus scraping the emulated engines."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.model_servers import (
    CONTENT_TYPE_0_0_4,
    CONTENT_TYPE_LLAMACPP,
    LLAMACPP_SERIES,
    Fault,
    LlamaCppServer,
    Spelling,
    StaticExporter,
    VllmServer,
)
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


OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def scrape(url: str) -> tuple[str, str]:
    """GET `url` as Prometheus 2.42 would (OpenMetrics preferred): (content type, body)."""
    request = urllib.request.Request(url, headers={"Accept": OPENMETRICS_ACCEPT})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_emulator_answers_text_0_0_4_whatever_accept_says() -> None:
    """Even when OpenMetrics is preferred, the body is text 0.0.4 with colon names."""
    with VllmServer() as vllm:
        content_type, body = scrape(vllm.url)
    assert content_type == CONTENT_TYPE_0_0_4
    assert 'vllm:num_requests_waiting{model_name="mistral-7b",engine="0"} 0.0' in body


def test_llamacpp_emulator_exports_the_fifteen_series_without_labels() -> None:
    """The 15 series of llama-server b11434 in its order, each one sample with no labels,
    served as llama-server serves them (whatever the Accept header says)."""
    with LlamaCppServer() as llamacpp:
        content_type, body = scrape(llamacpp.url)
    samples = [line for line in body.splitlines() if not line.startswith("#")]
    assert [line.split(" ")[0] for line in samples] == [name for name, _, _ in LLAMACPP_SERIES]
    assert content_type == CONTENT_TYPE_LLAMACPP


def test_counters_advance_at_the_set_rate_and_stay_continuous() -> None:
    """A counter grows by rate × elapsed clock time; a new rate continues from its value."""
    clock = FakeClock()
    vllm = VllmServer(clock=clock)
    vllm.set(tokens_per_second=10)
    clock.now += 3
    assert vllm.counter_value("vllm:generation_tokens_total") == 30
    vllm.set(tokens_per_second=2)
    clock.now += 5
    assert vllm.counter_value("vllm:generation_tokens_total") == 40


def test_underscore_spelling_has_no_colon_names() -> None:
    """Spelling.UNDERSCORE serves vllm_num_requests_waiting and no colon name at all."""
    with VllmServer(spelling=Spelling.UNDERSCORE) as vllm:
        vllm.set(waiting=4)
        _, body = scrape(vllm.url)
    assert 'vllm_num_requests_waiting{model_name="mistral-7b",engine="0"} 4.0' in body
    assert ":" not in "".join(line.split("{")[0] for line in body.splitlines())


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(Fault.NAN, " NaN"), (Fault.INF, " +Inf"), (Fault.NEGATIVE, " -4.0")],
)
def test_fault_modes_replace_every_value(fault: Fault, expected: str) -> None:
    """NaN / +Inf / negative modes change every sample's value."""
    with VllmServer() as vllm:
        vllm.set(waiting=3)
        vllm.set_fault(fault)
        _, body = scrape(vllm.url)
    waiting = next(line for line in body.splitlines() if line.startswith("vllm:num_requests_w"))
    assert waiting.endswith(expected)


def test_http_500_fault_fails_the_scrape() -> None:
    """Fault.HTTP_500 answers 500."""
    with StaticExporter() as exporter:
        exporter.set_fault(Fault.HTTP_500)
        with pytest.raises(urllib.error.HTTPError) as caught:
            scrape(exporter.url)
    caught.value.close()  # the error holds the response socket open
    assert caught.value.code == 500
