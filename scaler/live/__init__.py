"""scaler.live: the adapter's control loop, actuator and leader election (docs/adapter.md)."""
