"""The identity tables: enrollment tokens, certificates, operators."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store.records import (
    CertificateRecord,
    Conflict,
    OperatorRecord,
    Tables,
    _insert,
)
from orchestrator.store.schema import (
    certificates,
    enrollment_tokens,
    gateways,
    operators,
)


class IdentityTables(Tables):
    """The identity tables: enrollment tokens, certificates, operators."""

    def add_token(
        self,
        conn: sa.Connection,
        *,
        token_sha256: str,
        gateway_id: str,
        serial: str,
        expires_at: datetime,
    ) -> None:
        conn.execute(
            enrollment_tokens.insert().values(
                token_sha256=token_sha256,
                gateway_id=gateway_id,
                serial=serial,
                expires_at=expires_at,
            )
        )

    def consume_token(
        self,
        conn: sa.Connection,
        *,
        token_sha256: str,
        gateway_id: str,
        serial: str,
        now: datetime,
        certificate_serial: str | None = None,
        certificate_pem: bytes | None = None,
        same_key: Callable[[bytes], bool] | None = None,
    ) -> bytes | None:
        """Mark a token used (for the certificate given, if any); raise :class:`Conflict`
        saying why if it cannot be used.

        A token already spent on a certificate whose key ``same_key`` recognises (the
        gateway retrying an enrollment whose answer it never got) is not refused: the
        PEM of that certificate is returned, as long as the token has not expired and
        the certificate is still live.

        Returns:
            None when the token was spent now; the earlier certificate for a retry.

        Raises:
            Conflict: the token is unknown, of another gateway, or the gateway is not
                registered (all three answered alike: the enrollment port must not tell
                which gateway ids exist), bound to another serial, used or expired.
        """
        row = conn.execute(
            sa.select(enrollment_tokens).where(enrollment_tokens.c.token_sha256 == token_sha256)
        ).first()
        if row is None or row.gateway_id != gateway_id:
            raise Conflict("token", "unknown enrollment token for this gateway")
        if row.serial != serial:
            raise Conflict("serial", "the token is bound to another device serial")
        if row.expires_at <= now:
            raise Conflict("token", "expired")
        if row.used_at is not None:
            earlier = self._retried(conn, row, now, same_key)
            if earlier is None:
                raise Conflict("token", "already used")
            return earlier
        # The WHERE makes two concurrent enrollments with one token race safely.
        done = conn.execute(
            enrollment_tokens.update()
            .where(enrollment_tokens.c.token_sha256 == token_sha256)
            .where(enrollment_tokens.c.used_at.is_(None))
            .values(
                used_at=now, certificate_serial=certificate_serial, certificate_pem=certificate_pem
            )
        )
        if done.rowcount != 1:
            raise Conflict("token", "already used")
        conn.execute(
            gateways.update().where(gateways.c.gateway_id == gateway_id).values(enrolled_at=now)
        )
        return None

    def _retried(
        self,
        conn: sa.Connection,
        token: sa.Row[Any],
        now: datetime,
        same_key: Callable[[bytes], bool] | None,
    ) -> bytes | None:
        """The certificate a used token was spent on, if this is a retry of that enrollment."""
        if same_key is None or not token.certificate_pem or not same_key(token.certificate_pem):
            return None
        issued = self.get_certificate(conn, token.certificate_serial or "")
        if issued is None or issued.revoked_at is not None or issued.not_after <= now:
            return None
        return bytes(token.certificate_pem)

    def record_certificate(
        self,
        conn: sa.Connection,
        *,
        serial_hex: str,
        role: str,
        name: str,
        not_before: datetime,
        not_after: datetime,
    ) -> None:
        conn.execute(
            certificates.insert().values(
                serial_hex=serial_hex,
                role=role,
                name=name,
                not_before=not_before,
                not_after=not_after,
            )
        )

    def get_certificate(self, conn: sa.Connection, serial_hex: str) -> CertificateRecord | None:
        row = conn.execute(
            sa.select(certificates).where(certificates.c.serial_hex == serial_hex)
        ).first()
        if row is None:
            return None
        return CertificateRecord(row.serial_hex, row.role, row.name, row.not_after, row.revoked_at)

    def revoke_certificates(
        self, conn: sa.Connection, *, role: str, name: str, reason: str, now: datetime
    ) -> list[str]:
        """Revoke every live certificate of ``role``/``name``; returns their serials."""
        rows = conn.execute(
            sa.select(certificates.c.serial_hex)
            .where(certificates.c.role == role)
            .where(certificates.c.name == name)
            .where(certificates.c.revoked_at.is_(None))
        ).all()
        serials = [r.serial_hex for r in rows]
        if serials:
            conn.execute(
                certificates.update()
                .where(certificates.c.serial_hex.in_(serials))
                .values(revoked_at=now, revocation_reason=reason)
            )
        return serials

    def revoked_certificates(self, conn: sa.Connection) -> list[CertificateRecord]:
        rows = conn.execute(
            sa.select(certificates).where(certificates.c.revoked_at.is_not(None))
        ).all()
        return [
            CertificateRecord(r.serial_hex, r.role, r.name, r.not_after, r.revoked_at) for r in rows
        ]

    # -- operators -------------------------------------------------------------------------

    def put_operator(
        self,
        conn: sa.Connection,
        *,
        name: str,
        role: str,
        communes: Sequence[str],
        now: datetime,
    ) -> None:
        stmt = _insert(conn, operators).values(
            name=name, role=role, communes=list(communes), created_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"role": role, "communes": list(communes), "disabled_at": None},
            )
        )

    def get_operator(self, conn: sa.Connection, name: str) -> OperatorRecord | None:
        row = conn.execute(sa.select(operators).where(operators.c.name == name)).first()
        if row is None:
            return None
        return OperatorRecord(row.name, row.role, tuple(row.communes), row.disabled_at is not None)

    # -- revocation and the CRL --------------------------------------------------------------

    def spend_open_tokens(self, conn: sa.Connection, gateway_id: str, now: datetime) -> int:
        """Mark every unused enrollment token of ``gateway_id`` used; returns how many."""
        done = conn.execute(
            enrollment_tokens.update()
            .where(enrollment_tokens.c.gateway_id == gateway_id)
            .where(enrollment_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
        return int(done.rowcount or 0)

    def unfit_certificates(
        self, conn: sa.Connection, serials: Sequence[str], now: datetime
    ) -> set[str]:
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

    def revoked_unexpired(
        self, conn: sa.Connection, now: datetime
    ) -> list[tuple[str, datetime, str]]:
        """(serial, revoked at, reason) of every revoked certificate not yet expired: what
        a CRL lists."""
        c = certificates.c
        rows = conn.execute(
            sa.select(c.serial_hex, c.revoked_at, c.revocation_reason)
            .where(c.revoked_at.is_not(None))
            .where(c.not_after > now)
            .order_by(c.serial_hex)
        )
        return [(r.serial_hex, r.revoked_at, r.revocation_reason or "") for r in rows]


# Serials per IN (...) list.
_CHUNK = 500
