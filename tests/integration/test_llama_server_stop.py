"""The llama-server fixture's teardown rule: a server that ignores SIGTERM fails the test,
unless its log shows llama.cpp's known hang after cancelled requests (`ShutdownHang`).

The process here is a shell script standing in for llama-server: the rule is about what
the fixture does with an exit status and a log, which no real server produces on demand.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.llama_server import LlamaServer, LlamaServers, ShutdownHang


def _stubborn(tmp_path: Path, line: str) -> LlamaServer:
    """A spawned process that prints `line`, then ignores SIGTERM until killed."""
    script = tmp_path / "llama-server"
    script.write_text(f"#!/bin/sh\ntrap '' TERM\necho '{line}'\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    server = LlamaServer(tmp_path / "model.gguf", binary=script)
    server.stop_grace_seconds = 1.0
    server.spawn()
    deadline = time.monotonic() + 10
    while line not in server.log():
        assert time.monotonic() < deadline, f"the stand-in printed nothing: {server.log()!r}"
        time.sleep(0.05)
    return server


def _servers(server: LlamaServer) -> LlamaServers:
    servers = LlamaServers(Path("unused.gguf"))
    servers._started.append(server)
    return servers


def test_a_hang_after_cancelled_requests_warns_with_the_log(tmp_path: Path) -> None:
    server = _stubborn(tmp_path, "0.14.654 W srv          stop: cancel task, id_task = 4")
    with pytest.warns(ShutdownHang, match="cancel task, id_task = 4"):
        _servers(server).stop_all()
    assert server.hung_log is not None


def test_any_other_hang_fails_naming_the_exit_code_and_log(tmp_path: Path) -> None:
    server = _stubborn(tmp_path, "0.00.058 I srv  llama_server: model loaded")
    with pytest.raises(AssertionError, match=r"exit code -9:\n.*model loaded"):
        _servers(server).stop_all()
