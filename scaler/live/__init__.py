"""scaler.live (see README: Layout)."""
