"""The desired and held documents of each gateway."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store.records import (
    Conflict,
    DocumentRecord,
    HeldRecord,
    Tables,
    _dialect_insert,
    _document,
    _insert,
    _inserted,
    gateway_record,
)
from orchestrator.store.schema import (
    UTCDateTime,
    desired_documents,
    held_documents,
)


class DocumentTables(Tables):
    """The desired and held documents of each gateway."""

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
        gateway_record(conn, gateway_id)
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
        set_held(conn, gateway_id, doc, now=now)

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

    def documents_of(
        self, conn: sa.Connection, gateway_ids: Sequence[str]
    ) -> dict[str, list[DocumentRecord]]:
        """:meth:`documents_for` of many gateways in a few queries (listings)."""
        found: dict[str, list[DocumentRecord]] = {g: [] for g in gateway_ids}
        d = desired_documents.c
        for i in range(0, len(gateway_ids), 500):
            rows = conn.execute(
                sa.select(desired_documents)
                .where(d.gateway_id.in_(list(gateway_ids[i : i + 500])))
                .order_by(d.gateway_id, d.kind)
            )
            for r in rows:
                found[r.gateway_id].append(_document(r))
        return found

    def held_of(
        self, conn: sa.Connection, gateway_ids: Sequence[str]
    ) -> dict[str, list[HeldRecord]]:
        """:meth:`held_for` of many gateways in a few queries (listings)."""
        found: dict[str, list[HeldRecord]] = {g: [] for g in gateway_ids}
        h = held_documents.c
        for i in range(0, len(gateway_ids), 500):
            rows = conn.execute(
                sa.select(held_documents)
                .where(h.gateway_id.in_(list(gateway_ids[i : i + 500])))
                .order_by(h.gateway_id, h.kind)
            )
            for r in rows:
                found[r.gateway_id].append(HeldRecord(r.kind, r.version, r.digest))
        return found

    def held_for(self, conn: sa.Connection, gateway_id: str) -> list[HeldRecord]:
        rows = conn.execute(
            sa.select(held_documents)
            .where(held_documents.c.gateway_id == gateway_id)
            .order_by(held_documents.c.kind)
        )
        return [HeldRecord(r.kind, r.version, r.digest) for r in rows]


def set_held(conn: sa.Connection, gateway_id: str, doc: HeldRecord, *, now: datetime) -> None:
    """Record that ``gateway_id`` holds ``doc`` (its hello or its acknowledgement said so)."""
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


@functools.cache
def _hold_if_issued(dialect: str) -> Any:
    d = desired_documents.c
    issued = sa.select(
        d.gateway_id, d.kind, d.version, d.digest, sa.bindparam("at", type_=UTCDateTime())
    ).where(
        d.gateway_id == sa.bindparam("gateway"),
        d.kind == sa.bindparam("doc_kind"),
        d.version == sa.bindparam("doc_version"),
        d.digest == sa.bindparam("doc_digest"),
    )
    stmt = _dialect_insert(dialect, held_documents).from_select(
        ["gateway_id", "kind", "version", "digest", "reported_at"], issued
    )
    return stmt.on_conflict_do_update(
        index_elements=["gateway_id", "kind"],
        set_={
            "version": stmt.excluded.version,
            "digest": stmt.excluded.digest,
            "reported_at": stmt.excluded.reported_at,
        },
    )


def hold_if_issued(
    dialect: str, gateway_id: str, doc: HeldRecord, *, now: datetime
) -> list[tuple[Any, dict[str, Any]]]:
    """:func:`set_held` only if ``doc`` is the gateway's desired document as issued (same
    version and digest), as rows for ``StoreRunner.write_rows``: the acknowledgements of a
    city-wide document go into the group commit with one ``executemany``."""
    params = {
        "gateway": gateway_id,
        "doc_kind": doc.kind,
        "doc_version": doc.version,
        "doc_digest": doc.digest,
        "at": now,
    }
    return [(_hold_if_issued(dialect), params)]
