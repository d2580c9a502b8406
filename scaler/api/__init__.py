"""What scaler serves: the external metrics API, the decision store it reads, self-metrics.

Sits below the drivers that run it: the live loop fills its decision store, and the activator
reuses its bounded listener. The metric names it serves and exports are not its own: they
live in ``scaler.metric_names``, shared with the simulator and the dashboards, which import
nothing from here (an import-linter contract).
"""
