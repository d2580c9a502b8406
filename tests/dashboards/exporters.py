"""A loopback HTTP endpoint serving prometheus_client registries, for Prometheus to scrape."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

from scaler.api.selfmetrics import EXPOSITION_CONTENT_TYPE


class RegistryEndpoint:
    """Serves the concatenated exposition of `expositions` at any path (threaded, 127.0.0.1).

    `lock` is held while rendering, so a feeder thread can update several series atomically.
    """

    def __init__(self, *expositions: Callable[[], bytes]) -> None:
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint.lock:
                    body = b"".join(render() for render in expositions)
                self.send_response(200)
                self.send_header("Content-Type", EXPOSITION_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: Prometheus scrapes every second."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
