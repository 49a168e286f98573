"""The one certificate check every authenticated call goes through.

TLS proved the caller holds a key the OnDijon CA certified; :meth:`Certificates.check`
adds what gRPC Python cannot do, refusing certificates that are expired, unknown to the
store or revoked. Refusals are audited (at most once per certificate per cache period).
"""

from __future__ import annotations

import logging
import time

import grpc

from foundation.clock import Clock
from orchestrator.access.peers import AuthError, Peer
from orchestrator.audit.log import Auditor
from orchestrator.store.runner import StoreRunner

log = logging.getLogger("ondijon.orchestrator")

# How long a certificate's "not revoked" answer is trusted before asking the store again.
# Revocations made through this process take effect at once (cache entries dropped, open
# streams cancelled); revocations made on another replica within this delay (the
# revocation sweeper of each replica re-checks open streams as often).
CERT_CACHE_SECONDS = 5.0


class Certificates:
    """Checks callers' certificates against the store, with a short-lived cache."""

    def __init__(self, runner: StoreRunner, clock: Clock, audit: Auditor) -> None:
        self.runner = runner
        self.clock = clock
        self.audit = audit
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def check(self, peer: Peer) -> None:
        """Refuse certificates that are expired, unknown to the store or revoked."""
        if peer.not_after_ts <= self.clock.now().timestamp():
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "client certificate has expired")
        cached = self._cache.get(peer.serial_hex)
        if cached is None or time.monotonic() - cached[0] > CERT_CACHE_SECONDS:
            record = await self.runner.read(self.runner.store.get_certificate, peer.serial_hex)
            if record is None:
                verdict: str | None = "client certificate is not known to this orchestrator"
            elif record.revoked_at is not None:
                verdict = "client certificate has been revoked"
            elif record.name != peer.identity.name or record.role != peer.identity.role.value:
                verdict = "client certificate does not match its registration"
            else:
                verdict = None
            cached = (time.monotonic(), verdict)
            self._cache[peer.serial_hex] = cached
            if verdict is not None:
                log.warning(
                    "refused %s (certificate %s): %s", peer.identity, peer.serial_hex, verdict
                )
                await self.audit.record(
                    actor=str(peer.identity),
                    action="auth.refused",
                    target=peer.serial_hex,
                    result="refused",
                    detail=verdict,
                )
        if cached[1] is not None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, cached[1])

    def forget(self, serials: set[str]) -> None:
        """Drop cached verdicts so the next call re-reads the store."""
        for serial in serials:
            self._cache.pop(serial, None)
