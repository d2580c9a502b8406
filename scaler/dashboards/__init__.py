"""scaler.dashboards (see README: Layout)."""
