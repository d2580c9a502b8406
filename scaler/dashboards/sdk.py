"""The parts of grafana-foundation-sdk (pinned 0.0.21) the dashboards use, imported once.

The SDK warns (DeprecationWarning, at import time) that its classic dashboard model and
builders are superseded by ``dashboardv2``. The Grafana sidecar provisions classic dashboard
JSON, which is what scaler writes, so the warning is silenced here, for these imports only;
the dashboards import the SDK through this module, never directly.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import stat, timeseries
    from grafana_foundation_sdk.builders.dashboard import (
        Dashboard,
        DatasourceVariable,
        QueryVariable,
        Row,
    )
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import (
        DataSourceRef,
        LegendDisplayMode,
        LegendPlacement,
        StackingMode,
    )
    from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
    from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

__all__ = [
    "Dashboard",
    "DashboardModel",
    "DataSourceRef",
    "Dataquery",
    "DatasourceVariable",
    "JSONEncoder",
    "LegendDisplayMode",
    "LegendPlacement",
    "QueryVariable",
    "Row",
    "StackingMode",
    "VariableRefresh",
    "VariableSort",
    "common_builders",
    "stat",
    "timeseries",
]
