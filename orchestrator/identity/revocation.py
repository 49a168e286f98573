"""Revocation: a certificate stops working everywhere, at once here and within seconds elsewhere.

gRPC checks a client certificate once, during the TLS handshake, and keeps the connection
open afterwards; certificate rotation does not close it either. So revoking is ours:

1. the store marks every live certificate of the identity revoked (one transaction, with
   the gateway's unused enrollment tokens spent, so a leaked token cannot bring it back);
2. this process forgets its cached verdicts and cancels the open streams of those
   certificates at once (``Hub.drop_certificate``);
3. the CRL is re-published for other consumers;
4. on PostgreSQL the other replicas are told at once (``orchestrator.ingest.routing``) and close
   theirs;
5. every replica also runs :class:`Sweeper`, which re-checks the certificates behind its own
   open streams every few seconds and closes those revoked (by another replica), expired
   or unknown. New streams anywhere are refused by ``Certificates.check``.

Coming back is by design a person's act: an admin issues a fresh enrollment token and the
installer enrolls the gateway again (a new key, a new certificate).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from foundation.clock import Clock
from orchestrator.access.certificates import CERT_CACHE_SECONDS, Certificates
from orchestrator.identity.crl import CrlPublisher
from orchestrator.ingest.hub import Hub
from orchestrator.ingest.routing import Router
from orchestrator.store.connection import Connection
from orchestrator.store.runner import StoreRunner
from provisioning.identity import Role

log = logging.getLogger("ondijon.orchestrator.revocation")

SWEEP_SECONDS = CERT_CACHE_SECONDS


@dataclass(frozen=True)
class Revocation:
    """What a revocation did."""

    serials: list[str]
    streams_closed: int
    crl_number: int


def close_streams(certificates: Certificates, hub: Hub, serials: set[str]) -> int:
    """Forget cached verdicts of ``serials`` and cancel this process's streams opened with them."""
    if not serials:
        return 0
    certificates.forget(serials)
    return hub.drop_certificate(serials)


class Revoker:
    """Revokes identities and closes the streams of revoked certificates."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        certificates: Certificates,
        hub: Hub,
        router: Router,
        crl: CrlPublisher,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.clock = clock
        self.certificates = certificates
        self.hub = hub
        self.router = router
        self.crl = crl

    def close_streams(self, serials: set[str]) -> int:
        """Forget cached verdicts of ``serials`` and cancel this process's streams opened
        with them; returns how many."""
        return close_streams(self.certificates, self.hub, serials)

    async def revoke(self, role: Role, name: str, reason: str) -> Revocation:
        """Revoke every live certificate of ``role``/``name`` and close its open streams."""
        store = self.store
        now = self.clock.now()

        def write(conn: Connection) -> list[str]:
            serials = store.revoke_certificates(
                conn, role=role.value, name=name, reason=reason[:256], now=now
            )
            if role is Role.GATEWAY:
                store.spend_open_tokens(conn, name, now)
            return serials

        serials = await self.runner.write(write)
        closed = self.close_streams(set(serials))
        await self.router.certificates_revoked(serials)
        crl = await self.crl.current(now, force=True)
        log.info(
            "revoked %s/%s: %d certificate(s), %d open stream(s) closed",
            role,
            name,
            len(serials),
            closed,
        )
        return Revocation(serials=serials, streams_closed=closed, crl_number=crl.number)


class Sweeper:
    """Closes this process's streams whose certificate is no longer good."""

    def __init__(self, revoker: Revoker) -> None:
        self.revoker = revoker
        self.runner = revoker.runner
        self.clock = revoker.clock
        self.hub = revoker.hub
        self.crl = revoker.crl

    async def sweep(self) -> int:
        """One pass; returns how many streams were closed."""
        serials = sorted(self.hub.open_serials())
        if not serials:
            return 0
        now = self.clock.now()
        unfit = await self.runner.read(self.runner.store.unfit_certificates, serials, now)
        closed = self.revoker.close_streams(unfit)
        if closed:
            log.warning("closed %d stream(s) of revoked or expired certificates", closed)
        return closed

    async def run(self) -> None:
        """Sweep every few seconds and keep the CRL fresh, until cancelled."""
        while True:
            await self.clock.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
                await self.crl.current(self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store may be briefly unreachable; the next pass tries again.
                log.exception("revocation sweep failed")
