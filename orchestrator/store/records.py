"""Rows of the orchestrator's store as typed records, its errors, and the statements and
helpers the table groups (:mod:`orchestrator.store.fleet`, ``documents``, ``devices``,
``events``, ``commands``, ``identity``, ``audit``) share."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from foundation.errors import FieldError
from orchestrator.store.schema import (
    audit_log,
    device_reports,
    events,
    gateway_devices,
    gateways,
)


class StoreError(FieldError):
    """Base of store errors."""


class NotFound(StoreError):
    """The named gateway, document or command does not exist."""


class Conflict(StoreError):
    """The write contradicts what is stored (duplicate id, stale version, used token)."""


@dataclass(frozen=True)
class GatewayRecord:
    gateway_id: str
    serial: str
    commune: str
    latitude: float
    longitude: float
    time_zone: str
    tags: tuple[str, ...]
    created_at: datetime
    enrolled_at: datetime | None
    firmware_version: str
    last_seen: datetime | None
    reported_sequence: int


@dataclass(frozen=True)
class DocumentRecord:
    gateway_id: str
    kind: int
    version: int
    digest: bytes
    payload: bytes
    issued_at: datetime
    issued_by: str


@dataclass(frozen=True)
class HeldRecord:
    kind: int
    version: int
    digest: bytes


@dataclass(frozen=True)
class EventRecord:
    gateway_id: str
    sequence: int
    at: datetime
    priority: int
    device_id: str
    type: str
    payload: bytes
    received_at: datetime
    copy_of: int | None = None


@dataclass(frozen=True)
class CommandRecord:
    command_id: str
    gateway_id: str
    payload: bytes
    expires_at: datetime
    status: int
    detail: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class OperatorRecord:
    name: str
    role: str
    communes: tuple[str, ...]
    disabled: bool


@dataclass(frozen=True)
class CertificateRecord:
    serial_hex: str
    role: str
    name: str
    not_after: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewEvent:
    """An event as received from a gateway, ready to store."""

    sequence: int
    at: datetime
    priority: int
    device_id: str
    type: str
    payload: bytes
    first_sequence: int | None = None


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return _dialect_insert(conn.dialect.name, table)


def _inserted(conn: sa.Connection, table: sa.Table, keys: list[str], **values: Any) -> bool:
    """Insert one row unless its key exists; True if it was inserted.

    ON CONFLICT DO NOTHING rather than look-then-insert: two replicas (or two
    transactions) adding the same key at once must see a :class:`Conflict`, not an
    integrity error from the database.
    """
    stmt = _insert(conn, table).values(**values).on_conflict_do_nothing(index_elements=keys)
    return _rowcount(conn, stmt) == 1


def _rowcount(conn: sa.Connection, stmt: Any) -> int:
    # SQLAlchemy only keeps an INSERT's row count when asked (psycopg otherwise reports -1).
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)


def _dialect_insert(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_REPORT_INSERT = device_reports.insert()
_LOG_DELETE = (
    device_reports.delete()
    .where(device_reports.c.gateway_id == sa.bindparam("gateway_id"))
    .where(device_reports.c.seq <= sa.bindparam("through_seq"))
)


@functools.cache
def _snapshot_upsert(dialect: str) -> Any:
    stmt = _dialect_insert(dialect, gateway_devices)
    return stmt.on_conflict_do_update(
        index_elements=["gateway_id"],
        set_={
            "payload": stmt.excluded.payload,
            "through_seq": stmt.excluded.through_seq,
            "updated_at": stmt.excluded.updated_at,
            "device_updates": gateway_devices.c.device_updates + stmt.excluded.device_updates,
        },
    )


@functools.cache
def _event_insert(dialect: str) -> Any:
    return _dialect_insert(dialect, events).on_conflict_do_nothing(
        index_elements=["gateway_id", "sequence"]
    )


_AUDIT_SIZES = {
    c.name: c.type.length
    for c in audit_log.columns
    if isinstance(c.type, sa.String) and c.type.length is not None
}


@functools.cache
def _report_counter(dialect: str) -> Any:
    stmt = _dialect_insert(dialect, gateway_devices)
    return stmt.on_conflict_do_update(
        index_elements=["gateway_id"],
        set_={
            "updated_at": stmt.excluded.updated_at,
            "device_updates": gateway_devices.c.device_updates + stmt.excluded.device_updates,
        },
    )


class Tables:
    """What every table group's operations may use."""

    engine: sa.Engine


def gateway_record(conn: sa.Connection, gateway_id: str) -> GatewayRecord:
    """The gateway ``gateway_id``, or :class:`NotFound`."""
    row = conn.execute(sa.select(gateways).where(gateways.c.gateway_id == gateway_id)).first()
    if row is None:
        raise NotFound("gateway_id", f"no gateway {gateway_id!r}")
    return _gateway(row)


def _gateway(row: sa.Row[Any]) -> GatewayRecord:
    tags = row.tags if isinstance(row.tags, list) else json.loads(row.tags)
    return GatewayRecord(
        gateway_id=row.gateway_id,
        serial=row.serial,
        commune=row.commune,
        latitude=row.latitude,
        longitude=row.longitude,
        time_zone=row.time_zone,
        tags=tuple(tags),
        created_at=row.created_at,
        enrolled_at=row.enrolled_at,
        firmware_version=row.firmware_version,
        last_seen=row.last_seen,
        reported_sequence=int(row.reported_sequence),
    )


def _document(row: sa.Row[Any]) -> DocumentRecord:
    return DocumentRecord(
        gateway_id=row.gateway_id,
        kind=row.kind,
        version=int(row.version),
        digest=bytes(row.digest),
        payload=bytes(row.payload),
        issued_at=row.issued_at,
        issued_by=row.issued_by,
    )


def _event(row: sa.Row[Any]) -> EventRecord:
    return EventRecord(
        gateway_id=row.gateway_id,
        sequence=int(row.sequence),
        at=row.at,
        priority=row.priority,
        device_id=row.device_id,
        type=row.type,
        payload=bytes(row.payload),
        received_at=row.received_at,
        copy_of=None if row.copy_of is None else int(row.copy_of),
    )


def _command(row: sa.Row[Any]) -> CommandRecord:
    return CommandRecord(
        command_id=row.command_id,
        gateway_id=row.gateway_id,
        payload=bytes(row.payload),
        expires_at=row.expires_at,
        status=row.status,
        detail=row.detail,
        created_at=row.created_at,
        created_by=row.created_by,
    )
