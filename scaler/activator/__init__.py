"""scaler.activator: the cold-start request buffer (docs/activator.md)."""
