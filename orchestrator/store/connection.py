"""How the orchestrator connects to its store, and how long it waits for it.

A replica whose database stops answering (a stalled network path holds the bytes and says
nothing) must find out and say so, not hang. Four bounds, in :class:`StoreSettings`:

- **connect**: a new connection that does not complete in ``connect_timeout_s`` fails;
- **statement** and **idle in transaction** (PostgreSQL, enforced by the server): a
  statement running longer than ``statement_timeout_s``, or a transaction left idle longer
  than ``idle_in_transaction_timeout_s``, is ended by the server, so a stuck replica cannot
  hold locks others wait on;
- **deadline** (enforced here, :mod:`orchestrator.store.runner`): an operation with no
  answer within ``deadline_s`` is abandoned, its connection is shut down under it (that
  is what wakes a thread blocked on a socket whose peer holds the bytes: the server-side
  timeouts never fire when the query never reached the server), and the caller gets
  :class:`StoreUnavailable`.

TCP keepalives catch a peer that vanished without a word; the deadline catches the rest.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from foundation.files import private_file

# What a store operation receives (``runner.read(fn)`` calls ``fn(conn, ...)``): callers
# outside the store name the type through this alias and never import SQLAlchemy.
Connection = sa.Connection


class StoreUnavailable(Exception):
    """The store did not answer in time, or its connection is lost; the message says which."""


@dataclass(frozen=True)
class StoreSettings:
    """Bounds on the store connection (``[store]`` in the orchestrator's configuration).

    Attributes:
        connect_timeout_s: a new connection must be up within this (PostgreSQL).
        statement_timeout_s: the server ends a statement running longer (PostgreSQL).
        idle_in_transaction_timeout_s: the server ends a transaction left idle longer
            (PostgreSQL).
        deadline_s: an operation (a read, or a group of writes committed together) with no
            answer within this is abandoned and the store is suspected unreachable. Below
            the admin client's own deadline (30 s), so an operator hears UNAVAILABLE from
            the replica rather than a timeout.
        application_name: how this replica's connections are named in ``pg_stat_activity``.
    """

    connect_timeout_s: float = 5.0
    statement_timeout_s: float = 10.0
    idle_in_transaction_timeout_s: float = 15.0
    deadline_s: float = 15.0
    application_name: str = "ondijon-orchestrator"

    def connect_args(self, application_name: str = "") -> dict[str, Any]:
        """psycopg (libpq) connection parameters carrying these bounds."""
        return {
            # libpq takes whole seconds, and treats 1 as 2.
            "connect_timeout": max(2, math.ceil(self.connect_timeout_s)),
            "application_name": (application_name or self.application_name)[:63],
            "options": (
                f"-c statement_timeout={int(self.statement_timeout_s * 1000)} "
                "-c idle_in_transaction_session_timeout="
                f"{int(self.idle_in_transaction_timeout_s * 1000)}"
            ),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }


def create_engine(url: str, settings: StoreSettings | None = None) -> sa.Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    settings = settings or StoreSettings()
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            # 0600 before SQLite writes a byte (its -wal and -shm take the same mode).
            private_file(Path(database))
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # No pre-ping: it would block, before any deadline could watch it, on a connection
    # whose peer stalled. A connection found dead on use invalidates the pool instead.
    return sa.create_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_recycle=300,
        pool_timeout=settings.deadline_s,
        connect_args=settings.connect_args(),
    )


def interrupt(dbapi_connection: Any) -> None:
    """Wake a thread blocked on ``dbapi_connection``: shut its socket down (PostgreSQL), or
    interrupt the statement (SQLite). The blocked call then fails with a connection error
    and the pool discards the connection."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is not None:
        with contextlib.suppress(Exception):
            fd = pgconn.socket
            # A duplicate descriptor: shutting it down acts on the socket itself, closing
            # it leaves psycopg's own descriptor alone (no reuse of a closed number).
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(Exception):
        dbapi_connection.interrupt()


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection to the store is gone (not a bad statement)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError)
    return isinstance(exc, sa.exc.TimeoutError)
