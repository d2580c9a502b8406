"""scaler.sources (see README: Layout)."""
