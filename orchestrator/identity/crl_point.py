"""The CRL distribution point: the issuing CA's CRL over plain HTTP, for any TLS stack.

Certificates name where their CRL is (``[identity] crl_urls``, RFC 5280 4.2.1.13); with
``[server] crl_listen`` set, the orchestrator serves it there itself: ``GET`` of a path of
one of those URLs answers the current CRL in DER (``application/pkix-crl``, RFC 5280
4.2.1.13 and RFC 2585). Plain HTTP is the rule for CRLs: the list is public and signed by
the issuing CA, and fetching it over TLS would need a revocation check of its own. It is
the only unencrypted port, off unless configured, and it serves nothing else (no request
body is read, other paths are 404, other methods 405).

The CRL is the one :class:`orchestrator.identity.crl.CrlPublisher` keeps in ``<state_dir>/crl.pem``
(rebuilt as revocations happen on any replica); a balancer or a static web server can
serve that file's DER form just as well, and any replica can answer.

Python's own ``http.server`` on a thread: a few requests a minute from relying parties.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("ondijon.orchestrator.crl_point")


class CrlPoint:
    """Serves ``crl_pem`` (a path) in DER at the paths of ``urls``."""

    def __init__(self, listen: str, crl_pem: Path, urls: tuple[str, ...]) -> None:
        host, _, port = listen.rpartition(":")
        self.crl_pem = crl_pem
        self.paths = {urlsplit(url).path or "/" for url in urls}
        point = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "ondijon-crl"
            sys_version = ""

            def do_GET(self) -> None:
                point.answer(self, with_body=True)

            def do_HEAD(self) -> None:
                point.answer(self, with_body=False)

            def log_message(self, format: str, *args: object) -> None:
                return  # one line per relying party's fetch is noise

        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)  # noqa: S104
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="crl-point", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def answer(self, request: BaseHTTPRequestHandler, *, with_body: bool) -> None:
        if urlsplit(request.path).path not in self.paths:
            request.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            crl = x509.load_pem_x509_crl(self.crl_pem.read_bytes())
        except (OSError, ValueError):
            log.exception("the CRL in %s cannot be served", self.crl_pem)
            request.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        der = crl.public_bytes(serialization.Encoding.DER)
        request.send_response(HTTPStatus.OK)
        request.send_header("Content-Type", "application/pkix-crl")
        request.send_header("Content-Length", str(len(der)))
        request.send_header("Cache-Control", "max-age=60")
        request.end_headers()
        if with_body:
            request.wfile.write(der)
