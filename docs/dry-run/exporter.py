"""A stand-in for one model server's /metrics, for the README's dry run of `scaler serve`.

No model behind it: it reports the load you give it. Requests arrive at `--rate` per second
and each takes `--service-seconds`, so `rate × service` are in the server (Little's law): the
first `--slots` of them running, the rest waiting. Counters (finished requests, tokens) grow
at that rate, so Prometheus' `rate()` reads it back. Series are named as vLLM's or llama.cpp's
`llama-server --metrics` name them, without the `model` and `namespace` labels: Prometheus
adds those as target labels (docs/dry-run/prometheus.yml), as a ServiceMonitor does from the
pod's labels in a cluster.

Standard library only:  python docs/dry-run/exporter.py --engine vllm --port 8000 --rate 0.1
"""

from __future__ import annotations

import argparse
import http.server
import time

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # keeps the colons in the names


def exposition(engine: str, rate: float, service: float, slots: int, elapsed: float) -> str:
    """The text a model server under this load would answer at `elapsed` seconds."""
    inside = rate * service
    running, waiting = min(float(slots), inside), max(0.0, inside - slots)
    finished = rate * elapsed
    if engine == "vllm":
        labels = '{model_name="dry-run",engine="0"}'
        return (
            f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {running}\n"
            f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{labels} {waiting}\n"
            "# TYPE vllm:request_success_total counter\n"
            'vllm:request_success_total{model_name="dry-run",engine="0",finished_reason="stop"} '
            f"{finished}\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{labels} {200 * finished}\n"
            f"# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{labels} "
            f"{1000 * finished}\n"
        )
    return (
        f"# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing {running}\n"
        f"# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred {waiting}\n"
        "# TYPE llamacpp:tokens_predicted_total counter\n"
        f"llamacpp:tokens_predicted_total {200 * finished}\n"
        f"# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total "
        f"{1000 * finished}\n"
    )


def main() -> None:
    """Serve the exposition on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("vllm", "llamacpp"), default="vllm")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=0.1, help="requests per second")
    parser.add_argument("--service-seconds", type=float, default=50.0, help="per request")
    parser.add_argument("--slots", type=int, default=4, help="requests one server runs at once")
    args = parser.parse_args()
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elapsed = time.monotonic() - started
            text = exposition(args.engine, args.rate, args.service_seconds, args.slots, elapsed)
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: Prometheus scrapes every 5 s."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"{args.engine} stand-in on http://127.0.0.1:{args.port}/metrics, {args.rate} req/s")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
