"""scaler.simulation (see README: Layout)."""
