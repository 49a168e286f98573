"""The web console's tables: operators' sign-in credentials and open sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.records import Tables, _insert, _rowcount
from orchestrator.store.schema import console_accounts, console_sessions


@dataclass(frozen=True)
class ConsoleAccount:
    name: str
    password_hash: str
    totp_secret: str
    totp_last_step: int


@dataclass(frozen=True)
class SessionRecord:
    operator: str
    method: str
    certificate_serial: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


class ConsoleTables(Tables):
    """Sign-in credentials (argon2id hash, TOTP secret) and sessions (by token digest)."""

    def put_console_account(
        self,
        conn: sa.Connection,
        *,
        name: str,
        password_hash: str,
        totp_secret: str,
        now: datetime,
    ) -> None:
        """Set ``name``'s password and TOTP secret (its open sessions end)."""
        values = {"password_hash": password_hash, "totp_secret": totp_secret, "updated_at": now}
        stmt = _insert(conn, console_accounts).values(name=name, totp_last_step=0, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))
        conn.execute(console_sessions.delete().where(console_sessions.c.operator == name))

    def get_console_account(self, conn: sa.Connection, name: str) -> ConsoleAccount | None:
        row = conn.execute(
            sa.select(console_accounts).where(console_accounts.c.name == name)
        ).first()
        if row is None:
            return None
        return ConsoleAccount(row.name, row.password_hash, row.totp_secret, row.totp_last_step)

    def spend_totp_step(self, conn: sa.Connection, name: str, step: int) -> bool:
        """Record ``step`` as used by ``name``; False if it (or a later one) already was,
        on this replica or another."""
        c = console_accounts.c
        stmt = (
            console_accounts.update()
            .where(c.name == name, c.totp_last_step < step)
            .values(totp_last_step=step)
        )
        return _rowcount(conn, stmt) == 1

    def set_password_hash(self, conn: sa.Connection, name: str, password_hash: str) -> None:
        conn.execute(
            console_accounts.update()
            .where(console_accounts.c.name == name)
            .values(password_hash=password_hash)
        )

    def add_session(
        self,
        conn: sa.Connection,
        *,
        token_sha256: str,
        operator: str,
        method: str,
        certificate_serial: str,
        csrf_token: str,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        conn.execute(console_sessions.delete().where(console_sessions.c.expires_at <= now))
        conn.execute(
            console_sessions.insert().values(
                token_sha256=token_sha256,
                operator=operator,
                method=method,
                certificate_serial=certificate_serial,
                csrf_token=csrf_token,
                created_at=now,
                expires_at=expires_at,
            )
        )

    def get_session(
        self, conn: sa.Connection, token_sha256: str, now: datetime
    ) -> SessionRecord | None:
        """The session of that token digest, unless it has expired."""
        c = console_sessions.c
        row = conn.execute(
            sa.select(console_sessions).where(c.token_sha256 == token_sha256, c.expires_at > now)
        ).first()
        if row is None:
            return None
        return SessionRecord(
            row.operator,
            row.method,
            row.certificate_serial,
            row.csrf_token,
            row.created_at,
            row.expires_at,
        )

    def end_session(self, conn: sa.Connection, token_sha256: str) -> None:
        conn.execute(
            console_sessions.delete().where(console_sessions.c.token_sha256 == token_sha256)
        )
