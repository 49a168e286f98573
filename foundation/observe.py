"""An HTTP endpoint for monitoring: Prometheus metrics, liveness and readiness.

``GET /metrics`` is the text exposition of a ``prometheus_client`` registry;
``GET /livez`` answers 200 while the process serves HTTP at all; ``GET /readyz`` answers
200 when the process says it is ready, else 503 with the reason (a load balancer takes a
replica out on it). Plain HTTP, meant for a monitoring network or loopback: it carries
counts, never a key nor personal data. It runs on its own thread, so it answers while the
event loop is busy (an orchestrator migrating its store at start-up is *not ready*, not
silent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# (ready, why not): read at each /readyz.
Readiness = Callable[[], tuple[bool, str]]


class ObserveServer:
    """Serves ``registry`` and ``readiness`` on ``listen`` (``host:port``; port 0: any)."""

    def __init__(self, listen: str, registry: CollectorRegistry, readiness: Readiness) -> None:
        host, _, port = listen.rpartition(":")
        self.registry = registry
        self.readiness = readiness
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/livez":
                    self._answer(200, b"alive\n")
                elif path == "/readyz":
                    ready, why = server.readiness()
                    text = "ready\n" if ready else f"not ready: {why}\n"
                    self._answer(200 if ready else 503, text.encode())
                else:
                    self._answer(404, b"not found: /metrics, /livez, /readyz\n")

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape every 15 s is not an event worth a log line

        address = (host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - as configured
        self._http = ThreadingHTTPServer(address, Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="observe-http", daemon=True
        )

    def start(self) -> ObserveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
