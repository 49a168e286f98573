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

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from foundation.errors import FieldError
from orchestrator.store import migrate
from orchestrator.store.connection import StoreSettings, create_engine
from orchestrator.store.schema import (
    audit_log,
    certificates,
    commands,
    desired_documents,
    device_reports,
    enrollment_tokens,
    events,
    gateway_devices,
    gateway_streams,
    gateways,
    held_documents,
    operators,
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


class Store:
    """Typed operations on the orchestrator's tables."""

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

    # -- gateways ------------------------------------------------------------------------

    def add_gateway(
        self,
        conn: sa.Connection,
        *,
        gateway_id: str,
        serial: str,
        commune: str,
        latitude: float,
        longitude: float,
        time_zone: str,
        tags: Sequence[str],
        now: datetime,
    ) -> GatewayRecord:
        added = _inserted(
            conn,
            gateways,
            ["gateway_id"],
            gateway_id=gateway_id,
            serial=serial,
            commune=commune,
            latitude=latitude,
            longitude=longitude,
            time_zone=time_zone,
            tags=list(tags),
            created_at=now,
        )
        if not added:
            raise Conflict("gateway_id", f"{gateway_id!r} is already registered")
        return self.get_gateway(conn, gateway_id)

    def get_gateway(self, conn: sa.Connection, gateway_id: str) -> GatewayRecord:
        row = conn.execute(sa.select(gateways).where(gateways.c.gateway_id == gateway_id)).first()
        if row is None:
            raise NotFound("gateway_id", f"no gateway {gateway_id!r}")
        return _gateway(row)

    def list_gateways(self, conn: sa.Connection, commune: str = "") -> list[GatewayRecord]:
        query = sa.select(gateways).order_by(gateways.c.gateway_id)
        if commune:
            query = query.where(gateways.c.commune == commune)
        return [_gateway(r) for r in conn.execute(query)]

    def record_hello(
        self,
        conn: sa.Connection,
        gateway_id: str,
        *,
        firmware_version: str,
        reported_sequence: int,
        held: Iterable[HeldRecord],
        now: datetime,
    ) -> None:
        conn.execute(
            gateways.update()
            .where(gateways.c.gateway_id == gateway_id)
            .values(
                firmware_version=firmware_version,
                reported_sequence=reported_sequence,
                last_seen=now,
            )
        )
        for doc in held:
            self.set_held(conn, gateway_id, doc, now=now)

    def touch(self, conn: sa.Connection, gateway_id: str, now: datetime) -> None:
        conn.execute(
            gateways.update().where(gateways.c.gateway_id == gateway_id).values(last_seen=now)
        )

    # -- which replica holds each gateway's stream ---------------------------------------------

    def open_stream(
        self, conn: sa.Connection, gateway_id: str, *, replica: str, stream: str, now: datetime
    ) -> None:
        """Record ``stream`` on ``replica`` as the gateway's stream, replacing any other."""
        stmt = _insert(conn, gateway_streams).values(
            gateway_id=gateway_id, replica=replica, stream=stream, opened_at=now, seen_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["gateway_id"],
                set_={"replica": replica, "stream": stream, "opened_at": now, "seen_at": now},
            )
        )

    def refresh_streams(
        self, conn: sa.Connection, replica: str, streams: Sequence[str], *, now: datetime
    ) -> set[str]:
        """Mark ``replica``'s ``streams`` seen at ``now``; returns those still recorded (the
        others were replaced by a newer stream of their gateway, or expired)."""
        c = gateway_streams.c
        kept: set[str] = set()
        for i in range(0, len(streams), 500):
            chunk = list(streams[i : i + 500])
            conn.execute(
                gateway_streams.update()
                .where(c.replica == replica)
                .where(c.stream.in_(chunk))
                .values(seen_at=now)
            )
            rows = conn.execute(
                sa.select(c.stream).where(c.replica == replica).where(c.stream.in_(chunk))
            )
            kept |= {r.stream for r in rows}
        return kept

    def close_stream(self, conn: sa.Connection, gateway_id: str, stream: str) -> None:
        """Forget ``stream`` unless a newer stream of the gateway replaced it already."""
        conn.execute(
            gateway_streams.delete()
            .where(gateway_streams.c.gateway_id == gateway_id)
            .where(gateway_streams.c.stream == stream)
        )

    def stream_of(self, conn: sa.Connection, gateway_id: str) -> str | None:
        """The stream recorded as ``gateway_id``'s, if any."""
        c = gateway_streams.c
        value = conn.execute(sa.select(c.stream).where(c.gateway_id == gateway_id)).scalar()
        return None if value is None else str(value)

    def release_replica(self, conn: sa.Connection, replica: str) -> None:
        """Forget every stream recorded for ``replica`` (it is stopping)."""
        conn.execute(gateway_streams.delete().where(gateway_streams.c.replica == replica))

    def live_streams(self, conn: sa.Connection, *, seen_since: datetime) -> dict[str, str]:
        """Gateway id -> replica, for streams seen since ``seen_since``."""
        c = gateway_streams.c
        rows = conn.execute(sa.select(c.gateway_id, c.replica).where(c.seen_at >= seen_since))
        return {r.gateway_id: r.replica for r in rows}

    # -- enrollment tokens and certificates ----------------------------------------------

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

    # -- desired and held documents ----------------------------------------------------------

    def put_document(
        self,
        conn: sa.Connection,
        *,
        gateway_id: str,
        kind: int,
        digest: bytes,
        payload: bytes,
        expected_version: int,
        issued_by: str,
        now: datetime,
    ) -> DocumentRecord:
        """Store a new version of a document; versions only go up."""
        self.get_gateway(conn, gateway_id)
        current = self.get_document(conn, gateway_id, kind)
        current_version = current.version if current else 0
        if expected_version and expected_version != current_version:
            raise Conflict(
                "expected_version",
                f"document is at version {current_version}, "
                f"not {expected_version} (someone else changed it)",
            )
        if current is not None and current.digest == digest:
            return current
        values = {
            "version": current_version + 1,
            "digest": digest,
            "payload": payload,
            "issued_at": now,
            "issued_by": issued_by,
        }
        if current is None:
            if not _inserted(
                conn,
                desired_documents,
                ["gateway_id", "kind"],
                gateway_id=gateway_id,
                kind=kind,
                **values,
            ):
                raise Conflict("expected_version", "document changed concurrently, retry")
        else:
            # Compare-and-set on the version: two replicas editing at once cannot both win.
            done = conn.execute(
                desired_documents.update()
                .where(desired_documents.c.gateway_id == gateway_id)
                .where(desired_documents.c.kind == kind)
                .where(desired_documents.c.version == current_version)
                .values(**values)
            )
            if done.rowcount != 1:
                raise Conflict("expected_version", "document changed concurrently, retry")
        document = self.get_document(conn, gateway_id, kind)
        assert document is not None
        return document

    def get_document(
        self, conn: sa.Connection, gateway_id: str, kind: int
    ) -> DocumentRecord | None:
        row = conn.execute(
            sa.select(desired_documents)
            .where(desired_documents.c.gateway_id == gateway_id)
            .where(desired_documents.c.kind == kind)
        ).first()
        return _document(row) if row else None

    def documents_for(self, conn: sa.Connection, gateway_id: str) -> list[DocumentRecord]:
        rows = conn.execute(
            sa.select(desired_documents)
            .where(desired_documents.c.gateway_id == gateway_id)
            .order_by(desired_documents.c.kind)
        )
        return [_document(r) for r in rows]

    def set_held(
        self, conn: sa.Connection, gateway_id: str, doc: HeldRecord, *, now: datetime
    ) -> None:
        stmt = _insert(conn, held_documents).values(
            gateway_id=gateway_id,
            kind=doc.kind,
            version=doc.version,
            digest=doc.digest,
            reported_at=now,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["gateway_id", "kind"],
                set_={"version": doc.version, "digest": doc.digest, "reported_at": now},
            )
        )

    def documents_not_held(
        self, conn: sa.Connection, gateway_ids: Sequence[str]
    ) -> list[DocumentRecord]:
        """Desired documents of any of ``gateway_ids`` that the gateway does not hold as
        issued (another version, another digest, or none)."""
        d, h = desired_documents.c, held_documents.c
        found: list[DocumentRecord] = []
        for i in range(0, len(gateway_ids), 500):
            query = (
                sa.select(desired_documents)
                .select_from(
                    desired_documents.outerjoin(
                        held_documents, sa.and_(h.gateway_id == d.gateway_id, h.kind == d.kind)
                    )
                )
                .where(d.gateway_id.in_(list(gateway_ids[i : i + 500])))
                .where(sa.or_(h.version.is_(None), h.version != d.version, h.digest != d.digest))
                .order_by(d.gateway_id, d.kind)
            )
            found += [_document(r) for r in conn.execute(query)]
        return found

    def held_for(self, conn: sa.Connection, gateway_id: str) -> list[HeldRecord]:
        rows = conn.execute(
            sa.select(held_documents)
            .where(held_documents.c.gateway_id == gateway_id)
            .order_by(held_documents.c.kind)
        )
        return [HeldRecord(r.kind, r.version, r.digest) for r in rows]

    # -- device state ------------------------------------------------------------------------

    def device_report_rows(
        self, gateway_id: str, seq: int, payload: bytes, *, updates: int, now: datetime
    ) -> list[tuple[Any, dict[str, Any]]]:
        """The writes that append one state report (serialized StateReport) to a gateway's
        log, as (statement, parameters) pairs for :meth:`StoreRunner.write_rows`.

        The hot path of ingestion: statements are built once per dialect and executed with
        bound parameters, many gateways' reports in one ``executemany``.
        """
        return [
            (_REPORT_INSERT, {"gateway_id": gateway_id, "seq": seq, "payload": payload}),
            (
                _report_counter(self.engine.dialect.name),
                {
                    "gateway_id": gateway_id,
                    "payload": b"",
                    "updated_at": now,
                    "device_updates": updates,
                },
            ),
        ]

    def snapshot_rows(
        self,
        gateway_id: str,
        seq: int,
        payload: bytes,
        *,
        updates: int,
        now: datetime,
        drop_log: bool,
    ) -> list[tuple[Any, dict[str, Any]]]:
        """The writes that make a complete report (every device of the gateway) the
        snapshot as it is, dropping the log it supersedes when there is one."""
        rows: list[tuple[Any, dict[str, Any]]] = [
            (
                _snapshot_upsert(self.engine.dialect.name),
                {
                    "gateway_id": gateway_id,
                    "payload": payload,
                    "through_seq": seq,
                    "updated_at": now,
                    "device_updates": updates,
                },
            )
        ]
        if drop_log:
            rows.append((_LOG_DELETE, {"gateway_id": gateway_id, "through_seq": seq}))
        return rows

    def add_device_report(
        self,
        conn: sa.Connection,
        gateway_id: str,
        seq: int,
        payload: bytes,
        *,
        updates: int,
        now: datetime,
    ) -> None:
        """Append one state report to a gateway's log, inside ``conn``'s transaction."""
        for statement, params in self.device_report_rows(
            gateway_id, seq, payload, updates=updates, now=now
        ):
            conn.execute(statement, params)

    def last_report_seq(self, conn: sa.Connection, gateway_id: str) -> int:
        reports = conn.execute(
            sa.select(sa.func.max(device_reports.c.seq)).where(
                device_reports.c.gateway_id == gateway_id
            )
        ).scalar()
        folded = conn.execute(
            sa.select(gateway_devices.c.through_seq).where(
                gateway_devices.c.gateway_id == gateway_id
            )
        ).scalar()
        return max(int(reports or 0), int(folded or 0))

    def get_devices(self, conn: sa.Connection, gateway_id: str) -> tuple[bytes, int]:
        """Snapshot and later reports, concatenated (a StateReport with duplicates), and
        the last report sequence they include."""
        row = conn.execute(
            sa.select(gateway_devices.c.payload, gateway_devices.c.through_seq).where(
                gateway_devices.c.gateway_id == gateway_id
            )
        ).first()
        snapshot, through = (bytes(row.payload), int(row.through_seq)) if row else (b"", 0)
        later = conn.execute(
            sa.select(device_reports.c.seq, device_reports.c.payload)
            .where(device_reports.c.gateway_id == gateway_id)
            .where(device_reports.c.seq > through)
            .order_by(device_reports.c.seq)
        ).all()
        last = int(later[-1].seq) if later else through
        return snapshot + b"".join(bytes(r.payload) for r in later), last

    def compact_devices(
        self, conn: sa.Connection, gateway_id: str, snapshot: bytes, through_seq: int
    ) -> None:
        """Replace the snapshot with ``snapshot`` and drop the reports it folds in."""
        conn.execute(
            gateway_devices.update()
            .where(gateway_devices.c.gateway_id == gateway_id)
            .values(payload=snapshot, through_seq=through_seq)
        )
        conn.execute(
            device_reports.delete()
            .where(device_reports.c.gateway_id == gateway_id)
            .where(device_reports.c.seq <= through_seq)
        )

    def device_updates_total(self, conn: sa.Connection) -> int:
        total = conn.execute(sa.select(sa.func.sum(gateway_devices.c.device_updates))).scalar()
        return int(total or 0)

    # -- events ---------------------------------------------------------------------------------

    def add_events(
        self, conn: sa.Connection, gateway_id: str, batch: Sequence[NewEvent], *, now: datetime
    ) -> int:
        """Store events idempotently by (gateway, sequence); returns how many were new."""
        if not batch:
            return 0
        # One prepared statement run with executemany: building a multi-row VALUES
        # statement per batch cost SQLAlchemy more than storing the rows.
        rows = [
            {
                "gateway_id": gateway_id,
                "sequence": e.sequence,
                "at": e.at,
                "priority": e.priority,
                "device_id": e.device_id,
                "type": e.type,
                "payload": e.payload,
                "received_at": now,
            }
            for e in batch
        ]
        stmt = _event_insert(conn.dialect.name).execution_options(preserve_rowcount=True)
        return int(conn.execute(stmt, rows).rowcount)

    def list_events(
        self,
        conn: sa.Connection,
        gateway_id: str,
        *,
        after_sequence: int,
        limit: int,
        newest_first: bool = False,
        priorities: Sequence[int] = (),
        types: Sequence[str] = (),
    ) -> list[EventRecord]:
        """Events oldest first (or the ``limit`` latest, newest first); ``types`` ending
        with ``.`` are prefixes."""
        query = sa.select(events).where(events.c.sequence > after_sequence).limit(limit)
        if gateway_id:
            query = query.where(events.c.gateway_id == gateway_id)
        if priorities:
            query = query.where(events.c.priority.in_(list(priorities)))
        if types:
            query = query.where(
                sa.or_(
                    *(
                        events.c.type.startswith(t, autoescape=True)
                        if t.endswith(".")
                        else events.c.type == t
                        for t in types
                    )
                )
            )
        order = (
            [events.c.sequence]
            if gateway_id
            else [events.c.received_at, events.c.gateway_id, events.c.sequence]
        )
        query = query.order_by(*(c.desc() if newest_first else c for c in order))
        return [_event(r) for r in conn.execute(query)]

    def event_payloads(
        self, conn: sa.Connection, gateway_id: str, sequences: Sequence[int]
    ) -> dict[int, bytes]:
        """The stored payloads of ``sequences`` (those held), by sequence."""
        found: dict[int, bytes] = {}
        for i in range(0, len(sequences), 500):
            rows = conn.execute(
                sa.select(events.c.sequence, events.c.payload)
                .where(events.c.gateway_id == gateway_id)
                .where(events.c.sequence.in_(list(sequences[i : i + 500])))
            )
            found.update((int(r.sequence), bytes(r.payload)) for r in rows)
        return found

    def held_ranges(
        self, conn: sa.Connection, gateway_id: str, *, after: int, limit: int
    ) -> list[tuple[int, int]]:
        """The sequences above ``after`` held for ``gateway_id``, as inclusive ranges (at
        most ``limit``, lowest first): what an agent that lost part of its outbox asks."""
        seq = events.c.sequence
        islands = (
            sa.select(
                seq.label("seq"), (seq - sa.func.row_number().over(order_by=seq)).label("grp")
            )
            .where(events.c.gateway_id == gateway_id)
            .where(seq > after)
            .subquery()
        )
        first = sa.func.min(islands.c.seq)
        rows = conn.execute(
            sa.select(first, sa.func.max(islands.c.seq))
            .group_by(islands.c.grp)
            .order_by(first)
            .limit(limit)
        )
        return [(int(a), int(b)) for a, b in rows]

    def events_received_since(
        self, conn: sa.Connection, since: datetime, *, limit: int
    ) -> list[EventRecord]:
        """Events stored at or after ``since``, oldest first, at most ``limit``."""
        query = (
            sa.select(events)
            .where(events.c.received_at >= since)
            .order_by(events.c.received_at, events.c.gateway_id, events.c.sequence)
            .limit(limit)
        )
        return [_event(r) for r in conn.execute(query)]

    def stored_sequence(self, conn: sa.Connection, gateway_id: str) -> int:
        value = conn.execute(
            sa.select(sa.func.max(events.c.sequence)).where(events.c.gateway_id == gateway_id)
        ).scalar()
        return int(value or 0)

    def missing_ranges(self, conn: sa.Connection, gateway_id: str) -> list[tuple[int, int]]:
        """Sequence ranges below the highest stored one that are not stored (gaps)."""
        seq = events.c.sequence
        ordered = (
            sa.select(seq.label("seq"), sa.func.lead(seq).over(order_by=seq).label("nxt"))
            .where(events.c.gateway_id == gateway_id)
            .subquery()
        )
        rows = conn.execute(
            sa.select(ordered.c.seq, ordered.c.nxt).where(ordered.c.nxt > ordered.c.seq + 1)
        ).all()
        gaps = [(int(r.seq) + 1, int(r.nxt) - 1) for r in rows]
        first = conn.execute(
            sa.select(sa.func.min(seq)).where(events.c.gateway_id == gateway_id)
        ).scalar()
        if first is not None and first > 1:
            gaps.insert(0, (1, int(first) - 1))
        return gaps

    # -- commands -----------------------------------------------------------------------------

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
        self.get_gateway(conn, gateway_id)
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

    # -- audit ------------------------------------------------------------------------------------

    def audit(
        self,
        conn: sa.Connection,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        commune: str,
        result: str,
        detail: str = "",
    ) -> None:
        """Append one entry; texts longer than their column are cut.

        PostgreSQL refuses an over-long value where SQLite keeps it: an entry about a
        refused, oversized request must still be written, on either backend.
        """
        texts = {
            "actor": actor,
            "action": action,
            "target": target,
            "commune": commune,
            "result": result,
            "detail": detail,
        }
        conn.execute(
            audit_log.insert().values(
                at=at, **{name: text[: _AUDIT_SIZES[name]] for name, text in texts.items()}
            )
        )

    def audit_entries(self, conn: sa.Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.id).limit(limit))
        return [dict(r._mapping) for r in rows]


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
