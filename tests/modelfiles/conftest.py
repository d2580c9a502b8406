"""Fixtures: the Hub stand-in (hub + storage host on loopback) and pins for its files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from scaler.modelfiles import ModelFilePin
from tests.modelfiles.hub_standin import HubFile, HubStandIn

COMMIT = "52e7645ba7c309695bec7ac98f4f005b139cf465"
REPO = "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"
NAME = "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
# http_get writes what it receives in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB) and resumes from
# the last whole chunk written: the file spans a few chunks so a cut lands between two.
CONTENT = os.urandom(25 * 2**20 + 12345)


@dataclass
class Hub:
    """The running stand-in and its Hub URL (what HF_ENDPOINT points at)."""

    standin: HubStandIn
    url: str


@pytest.fixture
async def hub(
    aiohttp_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Hub:
    """Hub and storage host on 127.0.0.1 (two ports: two origins); HF_ENDPOINT set, no token
    (HF_HOME is empty, so no token file of the machine is picked up either)."""
    standin = HubStandIn()
    storage: TestServer = await aiohttp_server(standin.storage_app())
    standin.storage_url = str(storage.make_url("")).rstrip("/")
    server: TestServer = await aiohttp_server(standin.hub_app())
    url = str(server.make_url("")).rstrip("/")
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return Hub(standin, url)


def pin_for(file: HubFile, **changes: Any) -> ModelFilePin:
    """The pin that names `file` correctly, with `changes` (python names) applied."""
    values: dict[str, Any] = {
        "kind": "ModelFile",
        "model": "tinyllama",
        "repo": file.repo,
        "revision": file.commit,
        "file": file.name,
        "size_bytes": len(file.content),
        "sha256": file.sha256,
        "sources": ("https://example.org/where-the-figures-come-from",),
    }
    values.update(changes)
    return ModelFilePin.model_validate(values)


def tinyllama(**changes: Any) -> HubFile:
    """A HubFile standing in for TinyLlama's GGUF (random bytes, real names)."""
    values: dict[str, Any] = {"repo": REPO, "commit": COMMIT, "name": NAME, "content": CONTENT}
    values.update(changes)
    return HubFile(**values)


def sha256(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()
