"""CPU instructions per external-metrics request, next to the bare aiohttp handler.

A machine shared with others moves requests/s by 15 % from one run to the next; the number
of instructions a request costs the server does not move with the load. Each server of
``api_throughput.py`` (``bare``, ``api-4``, ``api-1000``: the HPA's question, answered from
the body rendered at publish) runs under ``valgrind --tool=callgrind`` over TLS; after a
warm-up the counters are zeroed, `--requests` requests go out over `--connections`
keep-alive connections (the same request on each, in rounds), and the counters are dumped:
instructions / requests is the server's cost per request, TLS included.

    python benchmarks/api_instructions.py [--requests 3200] [--connections 16]

Needs valgrind (``callgrind_control``, ``callgrind_annotate``); a run takes about a minute
per server.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = Path(__file__).resolve().parent / "api_throughput.py"
QUERIES = {
    "bare": "",
    "api-4": "?labelSelector=model%3Dmistral-7b",
    "api-1000": "?labelSelector=model%3Dmodel-0500",
}
PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/cortex/scaler-desired-replicas"


class Connections:
    """Keep-alive TLS connections sending one request each per round, answers read whole."""

    def __init__(self, port: int, count: int, query: str) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the server's certificate is a throwaway
        self.request = (
            f"GET {PATH}{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.sockets = [
            context.wrap_socket(socket.create_connection(("127.0.0.1", port))) for _ in range(count)
        ]
        self.buffers = [b""] * count

    def round(self) -> None:
        """One request on every connection, then every answer."""
        for sock in self.sockets:
            sock.sendall(self.request)
        for i, sock in enumerate(self.sockets):
            self.buffers[i] = _read_answer(sock, self.buffers[i])

    def close(self) -> None:
        """Close every connection."""
        for sock in self.sockets:
            sock.close()


def _read_answer(sock: ssl.SSLSocket, buffer: bytes) -> bytes:
    """Read one whole 200 answer from `sock`; returns what came after it."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            length = re.search(rb"content-length: (\d+)", buffer[:end], re.IGNORECASE)
            assert length is not None, buffer[:200]
            total = end + 4 + int(length.group(1))
            if len(buffer) >= total:
                assert buffer.startswith(b"HTTP/1.1 200"), buffer[:200]
                return buffer[total:]
        buffer += sock.recv(65536)


def instructions_per_request(kind: str, requests: int, connections: int, folder: Path) -> float:
    """Run `kind` under callgrind and count the instructions of `requests` requests."""
    out = folder / f"callgrind.{kind}"
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}.%p",
            sys.executable,
            str(THROUGHPUT),
            "--serve",
            kind,
            "--tls",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert server.stdin is not None
    assert server.stdout is not None
    port = int(server.stdout.readline())
    clients = Connections(port, connections, QUERIES[kind])
    for _ in range(max(1, 200 // connections)):  # warm-up: imports, caches, TLS sessions
        clients.round()
    pid = str(server.pid)
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    rounds = max(1, requests // connections)
    for _ in range(rounds):
        clients.round()
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    clients.close()
    server.stdin.close()
    server.wait(timeout=120)
    dumps = sorted(glob.glob(f"{out}.{pid}.*"))  # the dump of the measured requests
    assert dumps, f"no callgrind dump for {kind}"
    summary = subprocess.run(
        ["callgrind_annotate", dumps[0]], capture_output=True, text=True, check=True
    ).stdout
    total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", summary)
    assert total is not None, summary[:500]
    return int(total.group(1).replace(",", "")) / (rounds * connections)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every server and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3200, help="requests measured")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    print(f"python {sys.version.split()[0]}, TLS, {args.connections} connections")
    with tempfile.TemporaryDirectory() as folder:
        counts = {
            kind: instructions_per_request(kind, args.requests, args.connections, Path(folder))
            for kind in QUERIES
        }
    for kind, count in counts.items():
        print(
            f"{kind:10} {count:10,.0f} instructions per request  bare / this: "
            f"{counts['bare'] / count:.2f}"
        )


if __name__ == "__main__":
    main()
