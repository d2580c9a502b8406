"""Integration tests against a real Prometheus, and the harness other tests reuse.

`tests.integration.prometheus` runs Prometheus as a child process; `tests.integration.
model_servers` emulates vLLM and llama.cpp metrics endpoints; conftest.py provides the
module-scoped `prometheus` fixture.
"""
