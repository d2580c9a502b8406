"""scaler.simulation: the simulator and its baselines, tune, bench, record (docs/simulator.md)."""
