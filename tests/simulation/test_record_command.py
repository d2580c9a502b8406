"""`scaler record` and `scaler calibrate` refuse what they cannot use, saying what to fix.

(The round trip against a real Prometheus: test_roundtrip.py.)
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation import record_command

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_record_names_an_unreachable_prometheus(tmp_path: Path) -> None:
    """Nothing listening: exit 1, the URL and the reason, and no trace written."""
    url = f"http://127.0.0.1:{_closed_port()}"
    out = tmp_path / "trace.csv"
    result = runner.invoke(
        app, ["record", "--prometheus-url", url, "--since", "1h", "--out", str(out)]
    )
    assert result.exit_code == 1
    assert f"cannot reach Prometheus at {url}" in result.output
    assert "--prometheus-url" in result.output
    assert not out.exists()


def test_calibrate_names_an_unreachable_prometheus(tmp_path: Path) -> None:
    """The same for calibrate."""
    url = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(
        app, ["calibrate", "--prometheus-url", url, "--out", str(tmp_path / "s.yaml")]
    )
    assert result.exit_code == 1
    assert f"cannot reach Prometheus at {url}" in result.output


def test_record_refuses_an_empty_range_and_bad_durations(tmp_path: Path) -> None:
    """--end before --start, --since with --start, and a malformed --step are refused before
    any query, each naming the option."""
    base = ["record", "--prometheus-url", "http://127.0.0.1:1", "--out", str(tmp_path / "t")]
    backwards = runner.invoke(
        app, [*base, "--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01"]
    )
    assert backwards.exit_code == 1
    assert "the range is empty" in backwards.output
    both = runner.invoke(app, [*base, "--since", "1d", "--start", "1767225600"])
    assert both.exit_code == 1
    assert "--since or --start" in both.output
    step = runner.invoke(app, [*base, "--since", "1d", "--step", "fifteen"])
    assert step.exit_code == 1
    assert "--step" in step.output


def test_calibrate_refuses_malformed_nodes() -> None:
    """--nodes must be NAME=GiB pairs with GiB > 0."""
    with pytest.raises(typer.Exit):
        record_command._parse_nodes("ms01-1=90,ms01-2")
    with pytest.raises(typer.Exit):
        record_command._parse_nodes("ms01-1=0")
    assert record_command._parse_nodes("a=90, b=45.5") == {"a": 90.0, "b": 45.5}


def _history_with_a_reset_and_a_gap() -> str:
    """30 minutes of one llama.cpp model at 15 s: the activator's counter restarts at minute
    15 (3 requests since), the pod's prompt counter has no samples for 10 minutes."""
    start = 1_767_225_600
    lines = ["# TYPE scaler_activator_forwarded counter"]
    for k in range(121):
        value = k if k < 60 else k - 60 + 3  # 59 before the restart, then from 3 again
        lines.append(
            f'scaler_activator_forwarded_total{{model="tinyllama"}} {value} {start + 15 * k}'
        )
    pod = 'namespace="cortex",model="tinyllama",pod="tinyllama-sim-00001"'
    for name in ("llamacpp:prompt_tokens", "llamacpp:tokens_predicted"):
        lines.append(f"# TYPE {name} counter")
        for k in range(121):
            if name == "llamacpp:prompt_tokens" and 40 <= k < 80:
                continue  # a scrape outage longer than Prometheus' 5 min lookback
            lines.append(f"{name}_total{{{pod}}} {100 * k} {start + 15 * k}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.mark.prometheus
def test_record_reports_a_reset_and_a_gap_and_counts_across_both(tmp_path: Path) -> None:
    """A counter reset counts from zero (59 + 3 + 60 = 122 requests, not a negative step);
    a gap is reported with its times, its tokens land after it."""
    from tests.integration.prometheus import PrometheusServer, create_blocks

    create_blocks(_history_with_a_reset_and_a_gap(), tmp_path / "tsdb")
    server = PrometheusServer.start_on_blocks(tmp_path / "tsdb")
    try:
        out = tmp_path / "trace.csv"
        result = runner.invoke(
            app,
            [
                "record", "--prometheus-url", server.url,
                "--policies", str(ROOT / "policies" / "tinyllama.yaml"),
                "--start", "1767225600", "--end", str(1767225600 + 1800), "--out", str(out),
            ],
        )  # fmt: skip
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert "1 counter reset(s)" in result.output
    # Samples stop at 00:09:45; Prometheus' 5 min lookback carries the last one to 00:14:45.
    assert "no sample from 2026-01-01T00:15:00Z to 2026-01-01T00:19:45Z (20 steps)" in (
        result.output
    )
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 59 + 3 + 60
    assert sum(int(r.split(",")[2]) for r in rows) == 100 * 120  # every prompt token
