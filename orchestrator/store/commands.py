"""Commands queued for gateways and their answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.records import (
    CommandRecord,
    Conflict,
    Tables,
    _command,
    _inserted,
    gateway_record,
)
from orchestrator.store.schema import (
    commands,
)


class CommandTables(Tables):
    """Commands queued for gateways and their answers."""

    def add_command(
        self,
        conn: sa.Connection,
        *,
        command_id: str,
        gateway_id: str,
        payload: bytes,
        expires_at: datetime,
        status: int,
        created_by: str,
        now: datetime,
    ) -> None:
        gateway_record(conn, gateway_id)
        added = _inserted(
            conn,
            commands,
            ["command_id"],
            command_id=command_id,
            gateway_id=gateway_id,
            payload=payload,
            expires_at=expires_at,
            status=status,
            created_at=now,
            created_by=created_by,
            updated_at=now,
        )
        if not added:
            raise Conflict("command_id", f"{command_id!r} was already sent (commands run once)")

    def get_command(self, conn: sa.Connection, command_id: str) -> CommandRecord | None:
        row = conn.execute(sa.select(commands).where(commands.c.command_id == command_id)).first()
        return _command(row) if row else None

    def commands_with_status(
        self, conn: sa.Connection, gateway_id: str, statuses: Sequence[int]
    ) -> list[CommandRecord]:
        rows = conn.execute(
            sa.select(commands)
            .where(commands.c.gateway_id == gateway_id)
            .where(commands.c.status.in_(list(statuses)))
            .order_by(commands.c.created_at)
        )
        return [_command(r) for r in rows]

    def recent_commands(
        self, conn: sa.Connection, gateway_id: str, statuses: Sequence[int], *, limit: int
    ) -> list[CommandRecord]:
        """The ``limit`` latest commands of ``gateway_id`` in ``statuses``, oldest first."""
        rows = conn.execute(
            sa.select(commands)
            .where(commands.c.gateway_id == gateway_id)
            .where(commands.c.status.in_(list(statuses)))
            .order_by(commands.c.created_at.desc())
            .limit(limit)
        )
        return [_command(r) for r in reversed(list(rows))]

    def commands_for(
        self, conn: sa.Connection, gateway_ids: Sequence[str], statuses: Sequence[int]
    ) -> list[CommandRecord]:
        """Commands of any of ``gateway_ids`` in ``statuses``, oldest first."""
        found: list[CommandRecord] = []
        for i in range(0, len(gateway_ids), 500):
            rows = conn.execute(
                sa.select(commands)
                .where(commands.c.gateway_id.in_(list(gateway_ids[i : i + 500])))
                .where(commands.c.status.in_(list(statuses)))
                .order_by(commands.c.created_at)
            )
            found += [_command(r) for r in rows]
        return found

    def set_command_status(
        self,
        conn: sa.Connection,
        command_id: str,
        *,
        status: int,
        detail: str,
        now: datetime,
        gateway_id: str | None = None,
        only_from: Sequence[int] = (),
    ) -> bool:
        """Update a command's status; with ``gateway_id``, only that gateway's command; with
        ``only_from``, only if its status is one of those (so an orchestrator's verdict never
        overwrites the gateway's own answer that landed first)."""
        stmt = commands.update().where(commands.c.command_id == command_id)
        if gateway_id is not None:
            stmt = stmt.where(commands.c.gateway_id == gateway_id)
        if only_from:
            stmt = stmt.where(commands.c.status.in_(list(only_from)))
        done = conn.execute(stmt.values(status=status, detail=detail[:1024], updated_at=now))
        return bool(done.rowcount)
