"""Panel and query constructors shared by the dashboards, on grafana-foundation-sdk 0.0.21.

Every dashboard reads the one Prometheus data source chosen in its ``datasource`` variable,
so panels and variables share :data:`DATASOURCE`. Legends are switched on explicitly: the SDK
builds timeseries panels with the legend hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaler.dashboards.sdk import (
    Dataquery,
    DataSourceRef,
    DatasourceVariable,
    LegendDisplayMode,
    LegendPlacement,
    QueryVariable,
    StackingMode,
    VariableRefresh,
    VariableSort,
    common_builders,
    stat,
    timeseries,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""The Prometheus data source every panel queries: the dashboard's `datasource` variable."""

MODEL_MATCHER = 'model=~"$model"'
"""Label matcher selecting the models picked in the `model` variable."""


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target of a panel and the legend its series get."""

    expr: str
    legend: str = ""


def datasource_variable() -> DatasourceVariable:
    """The `datasource` variable: which Prometheus the dashboard reads."""
    return DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def model_variable(metric: str, *, multi: bool) -> QueryVariable:
    """The `model` variable, listing the models that have `metric` (one of scaler's gauges)."""
    return (
        QueryVariable("model")
        .label("Model")
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, model)")
        .definition(f"label_values({metric}, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )


def _targets(queries: Sequence[Query], *, instant: bool) -> list[Dataquery]:
    targets = []
    for index, query in enumerate(queries):
        target = Dataquery().expr(query.expr).ref_id(chr(ord("A") + index))
        if query.legend:
            target = target.legend_format(query.legend)
        if instant:
            target = target.instant()
        targets.append(target)
    return targets


def graph(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    minimum: float | None = 0,
) -> timeseries.Panel:
    """A time series panel with a visible legend listing last and max values."""
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
        .fill_opacity(10)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if description:
        panel = panel.description(description)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(StackingMode.NORMAL))
    for target in _targets(queries, instant=False):
        panel = panel.with_target(target)
    return panel


def single_stat(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 6,
    height: int = 4,
) -> stat.Panel:
    """A stat panel showing the last value of instant queries."""
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    if description:
        panel = panel.description(description)
    for target in _targets(queries, instant=True):
        panel = panel.with_target(target)
    return panel
