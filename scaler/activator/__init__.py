"""scaler.activator (see README: Layout)."""
