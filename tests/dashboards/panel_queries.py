"""Every PromQL target of the rendered dashboards, with Grafana's variables substituted."""

from __future__ import annotations

import json

from scaler.dashboards import render_all

SUBSTITUTIONS = {
    "$model": ".+",
    "$__rate_interval": "1m",
    "$__range_s": "3600",  # before $__range, its prefix
    "$__range": "1h",
}
"""What Grafana puts in for "All" models, a 1 s scrape's rate window and a 1 h range."""


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr with variables substituted) for every target."""
    found = []
    for name, text in render_all().items():
        for panel in json.loads(text)["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in SUBSTITUTIONS.items():
                    expr = expr.replace(variable, value)
                found.append((name, panel["title"], expr))
    return found


QUERIES = panel_queries()
IDS = [f"{name.removesuffix('.json')}:{title}:{i}" for i, (name, title, _) in enumerate(QUERIES)]
