"""The orchestrator's store: fleet registry, desired state, device state, events, commands.

One interface over SQLAlchemy Core, so the embedded default (one SQLite file) and
PostgreSQL (several orchestrator replicas) run the same code; callers never see SQL.

Methods are synchronous and cheap; the async server calls them through
:class:`orchestrator.store.writer.StoreRunner`, which runs reads on a small thread pool and
groups concurrent writes into one transaction (group commit), so 1,000 gateways reporting
every second cost a few commits per second, not a thousand.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``: a transaction that returned
survives a power cut, which is what lets the link acknowledge only what is committed.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.store import migrate
from orchestrator.store.audit import AuditTables
from orchestrator.store.commands import CommandTables
from orchestrator.store.connection import StoreSettings, create_engine
from orchestrator.store.console import ConsoleTables
from orchestrator.store.devices import DeviceTables
from orchestrator.store.documents import DocumentTables
from orchestrator.store.events import EventTables
from orchestrator.store.fleet import FleetTables
from orchestrator.store.identity import IdentityTables
from orchestrator.store.records import (
    CertificateRecord,
    CommandRecord,
    Conflict,
    DocumentRecord,
    EventRecord,
    GatewayRecord,
    HeldRecord,
    NewEvent,
    NotFound,
    OperatorRecord,
    StoreError,
)

__all__ = [
    "CertificateRecord",
    "CommandRecord",
    "Conflict",
    "DocumentRecord",
    "EventRecord",
    "GatewayRecord",
    "HeldRecord",
    "NewEvent",
    "NotFound",
    "OperatorRecord",
    "Store",
    "StoreError",
]


class Store(
    FleetTables,
    IdentityTables,
    DocumentTables,
    DeviceTables,
    EventTables,
    CommandTables,
    AuditTables,
    ConsoleTables,
):
    """Typed operations on the orchestrator's tables, one table group per module."""

    def __init__(self, engine: sa.Engine, settings: StoreSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or StoreSettings()

    @classmethod
    def open(cls, url: str, settings: StoreSettings | None = None) -> Store:
        """Open (and migrate) the store at ``url``."""
        engine = create_engine(url, settings)
        migrate.upgrade(engine)
        return cls(engine, settings)

    def close(self) -> None:
        self.engine.dispose()
