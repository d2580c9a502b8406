"""scaler: an autoscaler for self-hosted LLM inference on Kubernetes."""

__version__ = "0.1.0"
