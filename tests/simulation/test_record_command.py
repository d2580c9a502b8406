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
