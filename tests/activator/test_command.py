"""`scaler activator` as a process: flags, JSON logs, serving, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
from yarl import URL

from tests.activator.model_server import ModelServerEmulator
from tests.builders import POLICIES


async def test_the_command_serves_a_model_outside_a_cluster() -> None:
    """--no-kubernetes --upstream: logs JSON, forwards to the emulator, stops on SIGTERM."""
    async with ModelServerEmulator() as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scaler.cli",
            "activator",
            "--policies",
            str(POLICIES / "tinyllama.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--no-kubernetes",
            "--upstream",
            f"tinyllama={server.url}",
            "--health-interval",
            "0.1",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            started: dict[str, object] = {}
            async with asyncio.timeout(30):
                while not started:
                    line = await process.stderr.readline()
                    assert line, "the activator exited before it started"
                    entry = json.loads(line)
                    if entry["event"] == "activator_started":
                        started = entry
            assert started["level"] == "info"
            url = URL(str(started["url"]))
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    url.with_path("/tinyllama/v1/completions"), data=b'{"prompt": "hi"}'
                ) as response,
            ):
                assert response.status == 200
                assert await response.read() == server.responses[0]
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_a_malformed_flag_is_a_clear_error() -> None:
    """A bad --upstream exits 2 and names the flag and the expected form."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        "activator",
        "--no-kubernetes",
        "--upstream",
        "tinyllama",
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"--upstream 'tinyllama': expected MODEL=URL" in stderr
