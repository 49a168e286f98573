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
   or unknown. New streams anywhere are refused by ``Orchestrator.check_certificate``.

Coming back is by design a person's act: an admin issues a fresh enrollment token and the
installer enrolls the gateway again (a new key, a new certificate).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from orchestrator.access.certificates import CERT_CACHE_SECONDS, Orchestrator
from orchestrator.store.schema import certificates, enrollment_tokens
from provisioning.identity import Role

log = logging.getLogger("ondijon.orchestrator.revocation")

SWEEP_SECONDS = CERT_CACHE_SECONDS
_CHUNK = 500


@dataclass(frozen=True)
class Revocation:
    """What a revocation did."""

    serials: list[str]
    streams_closed: int
    crl_number: int


def spend_open_tokens(conn: sa.Connection, gateway_id: str, now: datetime) -> int:
    """Mark every unused enrollment token of ``gateway_id`` used; returns how many."""
    done = conn.execute(
        enrollment_tokens.update()
        .where(enrollment_tokens.c.gateway_id == gateway_id)
        .where(enrollment_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    return int(done.rowcount or 0)


async def revoke(app: Orchestrator, role: Role, name: str, reason: str) -> Revocation:
    """Revoke every live certificate of ``role``/``name`` and close its open streams."""
    store = app.runner.store
    now = app.clock.now()

    def write(conn: sa.Connection) -> list[str]:
        serials = store.revoke_certificates(
            conn, role=role.value, name=name, reason=reason[:256], now=now
        )
        if role is Role.GATEWAY:
            spend_open_tokens(conn, name, now)
        return serials

    serials = await app.runner.write(write)
    closed = close_streams(app, set(serials))
    await app.router.certificates_revoked(serials)
    crl = await app.crl.current(now, force=True)
    log.info(
        "revoked %s/%s: %d certificate(s), %d open stream(s) closed",
        role,
        name,
        len(serials),
        closed,
    )
    return Revocation(serials=serials, streams_closed=closed, crl_number=crl.number)


def close_streams(app: Orchestrator, serials: set[str]) -> int:
    """Forget cached verdicts of ``serials`` and cancel this process's streams opened with them."""
    if not serials:
        return 0
    app.forget_certificates(serials)
    return app.hub.drop_certificate(serials)


def _unfit(conn: sa.Connection, serials: list[str], now: datetime) -> set[str]:
    """Those of ``serials`` that are revoked, expired or unknown to the store."""
    c = certificates.c
    unfit = set(serials)
    for i in range(0, len(serials), _CHUNK):
        rows = conn.execute(
            sa.select(c.serial_hex)
            .where(c.serial_hex.in_(serials[i : i + _CHUNK]))
            .where(c.revoked_at.is_(None))
            .where(c.not_after > now)
        )
        unfit -= {r.serial_hex for r in rows}
    return unfit


class Sweeper:
    """Closes this process's streams whose certificate is no longer good."""

    def __init__(self, app: Orchestrator) -> None:
        self.app = app

    async def sweep(self) -> int:
        """One pass; returns how many streams were closed."""
        serials = sorted(self.app.hub.open_serials())
        if not serials:
            return 0
        now = self.app.clock.now()
        unfit = await self.app.runner.read(lambda c: _unfit(c, serials, now))
        closed = close_streams(self.app, unfit)
        if closed:
            log.warning("closed %d stream(s) of revoked or expired certificates", closed)
        return closed

    async def run(self) -> None:
        """Sweep every few seconds and keep the CRL fresh, until cancelled."""
        while True:
            await self.app.clock.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
                await self.app.crl.current(self.app.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store may be briefly unreachable; the next pass tries again.
                log.exception("revocation sweep failed")
