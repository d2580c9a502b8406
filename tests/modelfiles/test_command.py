"""`scaler fetch-model`: exit codes and output, through the real CLI and the Hub stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner, Result

from scaler.cli import app
from scaler.modelfiles.command import EXIT_REFUSED
from tests.modelfiles.conftest import CONTENT, Hub, tinyllama
from tests.modelfiles.test_pin import GOOD


def _write_pin(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tinyllama.yaml"
    path.write_text(text)
    return path


async def _run(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, ["fetch-model", *args])


async def test_fetch_then_rerun_is_a_no_op(hub: Hub, tmp_path: Path) -> None:
    """First run downloads (exit 0); the second finds the verified file and asks nothing."""
    file = hub.standin.add(tinyllama())
    pin = GOOD.replace(
        "sha256: 9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0",
        f"sha256: {file.sha256}",
    ).replace("sizeBytes: 668788096", f"sizeBytes: {len(CONTENT)}")
    models = tmp_path / "models"
    models.mkdir()
    path = _write_pin(tmp_path, pin)
    first = await _run("--pin", str(path), "--models-dir", str(models))
    assert first.exit_code == 0, first.output
    assert "tinyllama: downloaded" in first.output
    asked = len(hub.standin.requests)
    second = await _run("--pin", str(path), "--models-dir", str(models))
    assert second.exit_code == 0, second.output
    assert "tinyllama: present" in second.output
    assert len(hub.standin.requests) == asked


async def test_a_placeholder_pin_is_refused_before_any_request(hub: Hub, tmp_path: Path) -> None:
    """Exit 3 (the Job must not retry), the field named, nothing asked of the Hub."""
    path = _write_pin(
        tmp_path,
        GOOD.replace("9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0", "0" * 64),
    )
    result = await _run("--pin", str(path), "--models-dir", str(tmp_path))
    assert result.exit_code == EXIT_REFUSED
    assert "sha256" in result.output
    assert "placeholder" in result.output
    assert hub.standin.requests == []


async def test_a_sha256_the_hub_contradicts_exits_refused(hub: Hub, tmp_path: Path) -> None:
    """The pin's sha256 is not the Hub's: exit 3 with both digests, no download."""
    file = hub.standin.add(tinyllama())
    pin = GOOD.replace("sizeBytes: 668788096", f"sizeBytes: {len(CONTENT)}")
    result = await _run("--pin", str(_write_pin(tmp_path, pin)), "--models-dir", str(tmp_path))
    assert result.exit_code == EXIT_REFUSED
    assert file.sha256 in result.output
    assert hub.standin.downloads() == []
