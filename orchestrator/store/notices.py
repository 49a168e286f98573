"""Notices between replicas sharing a PostgreSQL store: ``NOTIFY`` inside a transaction,
``LISTEN`` on a connection of its own (:mod:`orchestrator.ingest.routing` says what they
carry)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from orchestrator.store.database import Store

CHANNEL = "ondijon_gateways"


def shared(store: Store) -> bool:
    """Several replicas may share ``store`` (PostgreSQL)."""
    return store.engine.dialect.name == "postgresql"


def notify(conn: sa.Connection, message: dict[str, Any]) -> None:
    """Queue ``message`` in ``conn``'s transaction (sent if and only if it commits)."""
    conn.execute(
        sa.text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": json.dumps(message)},
    )


@asynccontextmanager
async def listening(store: Store) -> AsyncIterator[Any]:
    """A connection of its own (psycopg, autocommit) listening on :data:`CHANNEL`."""
    import psycopg  # PostgreSQL only: the embedded store never listens

    url = store.engine.url.set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    name = f"{store.settings.application_name}-listen"
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, **store.settings.connect_args(name)
    ) as conn:
        await conn.execute(sa.text(f"LISTEN {CHANNEL}").text)
        yield conn
