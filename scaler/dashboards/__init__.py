"""Grafana dashboards as code (grafana-foundation-sdk 0.0.21), written by `scaler dashboards`.

Three dashboards, each queried only through the names in ``scaler.metric_names``:
policy overview (every model), model detail (one model) and adapter health. The JSON is
rendered deterministically (sorted keys, two-space indent, trailing newline) so the files
committed under ``manifests/monitoring/dashboards/`` can be checked to be current: a test
regenerates them and compares bytes, and ``scaler dashboards --check`` does the same in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from scaler.dashboards import adapter_health, model_detail, overview
from scaler.dashboards.sdk import DashboardModel, JSONEncoder

DEFAULT_OUT: Final = Path("manifests/monitoring/dashboards")
"""Where the committed dashboards live, relative to the repository root."""

BUILDERS: Final[dict[str, Callable[[], DashboardModel]]] = {
    f"{overview.UID}.json": overview.build,
    f"{model_detail.UID}.json": model_detail.build,
    f"{adapter_health.UID}.json": adapter_health.build,
}
"""File name -> builder, one per dashboard."""


def render(dashboard: DashboardModel) -> str:
    """One dashboard as the exact JSON text committed (stable key order, newline at the end)."""
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    """Every dashboard's file name and JSON text."""
    return {name: render(build()) for name, build in BUILDERS.items()}


def write(out: Path) -> list[Path]:
    """Write every dashboard into `out` (created if missing); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def outdated(out: Path) -> list[Path]:
    """The dashboard files in `out` that are missing or differ from what would be written."""
    stale = []
    for name, text in render_all().items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


__all__ = ["BUILDERS", "DEFAULT_OUT", "outdated", "render", "render_all", "write"]
