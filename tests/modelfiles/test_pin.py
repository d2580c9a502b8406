"""The pin format: strict, and it refuses what is not a verified figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.modelfiles import PinError, load_pin, parse_pin
from tests.deploy.objects import MANIFESTS

PINS = sorted((MANIFESTS / "model-files" / "pins").glob("*.yaml"))

GOOD = """
kind: ModelFile
model: tinyllama
repo: TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF
revision: 52e7645ba7c309695bec7ac98f4f005b139cf465
file: tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf
sizeBytes: 668788096
sha256: 9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0
sources: [https://huggingface.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF]
"""


@pytest.mark.parametrize("path", [p for p in PINS if p.name != "kustomization.yaml"], ids=str)
def test_shipped_pins_load(path: Path) -> None:
    """Every shipped pin passes the strict loader (no placeholder in the repository)."""
    assert load_pin(path).model == path.stem


def test_a_good_pin_parses() -> None:
    """The reference pin parses, camelCase keys mapped."""
    pin = parse_pin(GOOD)
    assert pin.size_bytes == 668788096


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "sha256: 9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0",
            "sha256: " + "0" * 64,  # YAML reads it as the integer 0
            "a placeholder",
        ),
        (
            "sha256: 9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0",
            "sha256: TODO-find-the-sha256",
            "is not a sha256",
        ),
        (
            "revision: 52e7645ba7c309695bec7ac98f4f005b139cf465",
            "revision: main",
            "pin a full commit hash",
        ),
        (
            "revision: 52e7645ba7c309695bec7ac98f4f005b139cf465",
            "revision: " + "f" * 40,
            "placeholder",
        ),
        ("sizeBytes: 668788096", "sizeBytes: 0", "greater than 0"),
        ("file: tinyllama", "file: ../tinyllama", "plain file name"),
        ("kind: ModelFile", "kind: ModelFile\nmirror: x", "Extra inputs are not permitted"),
    ],
)
def test_a_pin_without_real_figures_is_refused(old: str, new: str, message: str) -> None:
    """Placeholders, branches, bad sizes, paths and unknown keys are errors naming the field."""
    assert old in GOOD
    with pytest.raises(PinError) as raised:
        parse_pin(GOOD.replace(old, new), "pins/tinyllama.yaml")
    assert message in str(raised.value)
    assert str(raised.value).startswith("pins/tinyllama.yaml: ")
