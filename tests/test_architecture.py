"""The layering of docs/design.md ("Layout"), checked on the source: scaler.core stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "scaler" / "core"
# Modules that do I/O, read a clock or draw random numbers; the core may use none of them.
FORBIDDEN = {
    "asyncio",
    "aiohttp",
    "datetime",
    "kubernetes",
    "os",
    "prometheus_api_client",
    "prometheus_client",
    "random",
    "requests",
    "socket",
    "subprocess",
    "threading",
    "time",
    "urllib",
    "numpy",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_io_clock_or_randomness(path: Path) -> None:
    """No scaler/core module imports an I/O, clock or randomness module."""
    roots = {name.split(".")[0] for name in imported_modules(path)}
    assert not roots & FORBIDDEN, f"{path.name} imports {sorted(roots & FORBIDDEN)}"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_nothing_else_from_scaler(path: Path) -> None:
    """scaler.core depends on nothing above it in the package."""
    inside = {n for n in imported_modules(path) if n.startswith("scaler")}
    assert all(n.startswith("scaler.core") for n in inside), sorted(inside)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The scanner itself finds `import time` and `from asyncio import sleep`."""
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom asyncio import sleep\n")
    assert {"time", "asyncio"} <= imported_modules(sample)
