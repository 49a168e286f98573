"""The console's TLS: the orchestrator's own server certificate, and operator certificates
asked for but not required (a browser without one signs in with a password and a code).

The certificate files are re-read when they change (the orchestrator renews its
certificate in place): the SNI callback of each handshake compares the files' stamp, which
costs a few ``stat`` calls, and moves the handshake to a fresh context when they moved.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("ondijon.orchestrator")


class ConsoleTls:
    """Builds the console's server context and keeps it current."""

    def __init__(self, cert: Path, key: Path, client_ca: Path) -> None:
        self.paths = (cert, key, client_ca)
        self._stamp = self._now_stamp()
        self.context = self._build()

    def _now_stamp(self) -> tuple[int, ...]:
        stats = [os.stat(p) for p in self.paths]
        return tuple(v for st in stats for v in (st.st_ino, st.st_mtime_ns, st.st_size))

    def _build(self) -> ssl.SSLContext:
        cert, key, client_ca = self.paths
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=str(client_ca))
        # Asked for, not required: operators' browsers may hold their certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.sni_callback = self._on_handshake
        return context

    def _on_handshake(
        self, sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        try:
            stamp = self._now_stamp()
            if stamp != self._stamp:
                self.context = self._build()
                self._stamp = stamp
                log.info("console: certificate files changed, new handshakes use them")
            if sock.context is not self.context:
                sock.context = self.context
        except (OSError, ssl.SSLError, ValueError):
            log.exception("console: could not reload TLS files; keeping the current ones")
