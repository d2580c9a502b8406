"""What scaler serves: the external metrics API, the decision store it reads, self-metrics.

Sits below the drivers (live loop, simulator, activator, dashboards) so that all of them
share one definition of the decision store and of the exported metric names.
"""
