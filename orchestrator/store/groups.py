"""SQL of group documents: put one, work out each gateway's effective document in one
transaction, and read what convergence, the fleet page and batch commands need.

A change to a group document costs a fixed handful of statements, whatever the number of
gateways it reaches: the city's gateways, documents and sources are read in three queries,
the winners worked out in memory (:func:`domain.city.targets.resolve`), and the new versions
written with one ``executemany`` per table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from domain.city.targets import Assignment, Level, Site, Target, resolve
from foundation.errors import FieldError
from orchestrator.store.schema import (
    commands,
    desired_documents,
    document_refusals,
    document_sources,
    gateways,
    group_documents,
    held_documents,
)

RELEASED = 0  # a source row with no assignment: the gateway's pin was released


class GroupConflict(FieldError):
    """Someone else changed the same documents meanwhile; nothing was written."""


@dataclass(frozen=True)
class GroupDocument:
    assignment_id: int
    kind: int
    target: Target
    sequence: int
    digest: bytes
    payload: bytes
    issued_at: datetime
    issued_by: str

    @property
    def assignment(self) -> Assignment:
        return Assignment(self.assignment_id, self.target, self.sequence)


@dataclass(frozen=True)
class Written:
    """A gateway's new desired document, as written (sent at once if its stream is here)."""

    gateway_id: str
    kind: int
    version: int
    digest: bytes
    payload: bytes
    issued_at: datetime
    issued_by: str


def target_json(target: Target) -> dict[str, Any]:
    return {
        "level": target.level.label,
        "name": target.name,
        "gateway_ids": list(target.gateway_ids),
        "polygon": [list(p) for p in target.polygon],
    }


def target_of(data: Any) -> Target:
    if isinstance(data, str):
        data = json.loads(data)
    return Target(
        level=Level[str(data["level"]).upper()],
        name=data.get("name", ""),
        gateway_ids=tuple(data.get("gateway_ids", ())),
        polygon=tuple((float(a), float(b)) for a, b in data.get("polygon", ())),
    )


def _group(row: Any) -> GroupDocument:
    return GroupDocument(
        assignment_id=row.assignment_id,
        kind=row.kind,
        target=target_of(row.target),
        sequence=row.sequence,
        digest=bytes(row.digest),
        payload=bytes(row.payload),
        issued_at=row.issued_at,
        issued_by=row.issued_by,
    )


def group_documents_of(conn: sa.Connection, kind: int = 0) -> list[GroupDocument]:
    query = sa.select(group_documents).order_by(group_documents.c.sequence)
    if kind:
        query = query.where(group_documents.c.kind == kind)
    return [_group(r) for r in conn.execute(query)]


def sites(conn: sa.Connection) -> list[Site]:
    rows = conn.execute(
        sa.select(
            gateways.c.gateway_id,
            gateways.c.commune,
            gateways.c.tags,
            gateways.c.latitude,
            gateways.c.longitude,
        ).order_by(gateways.c.gateway_id)
    )
    return [
        Site(r.gateway_id, r.commune, frozenset(r.tags or ()), r.latitude, r.longitude)
        for r in rows
    ]


def put_group_document(
    conn: sa.Connection,
    *,
    kind: int,
    target: Target,
    digest: bytes,
    payload: bytes,
    issued_by: str,
    now: datetime,
) -> GroupDocument:
    """Store the document assigned to ``target`` (replacing the previous one there)."""
    sequence = (conn.execute(sa.select(sa.func.max(group_documents.c.sequence))).scalar() or 0) + 1
    values = {
        "level": int(target.level),
        "target": target_json(target),
        "sequence": sequence,
        "digest": digest,
        "payload": payload,
        "issued_at": now,
        "issued_by": issued_by,
    }
    done = conn.execute(
        group_documents.update()
        .where(group_documents.c.kind == kind)
        .where(group_documents.c.target_key == target.key)
        .values(**values)
    )
    if not done.rowcount:
        conn.execute(group_documents.insert().values(kind=kind, target_key=target.key, **values))
    row = conn.execute(
        sa.select(group_documents)
        .where(group_documents.c.kind == kind)
        .where(group_documents.c.target_key == target.key)
    ).one()
    return _group(row)


def remove_group_document(conn: sa.Connection, kind: int, target: Target) -> bool:
    done = conn.execute(
        group_documents.delete()
        .where(group_documents.c.kind == kind)
        .where(group_documents.c.target_key == target.key)
    )
    return bool(done.rowcount)


@dataclass(frozen=True)
class _Current:
    version: int
    digest: bytes


def _documents(conn: sa.Connection, kind: int) -> dict[str, _Current]:
    rows = conn.execute(
        sa.select(
            desired_documents.c.gateway_id, desired_documents.c.version, desired_documents.c.digest
        ).where(desired_documents.c.kind == kind)
    )
    return {r.gateway_id: _Current(r.version, bytes(r.digest)) for r in rows}


def _sources(conn: sa.Connection, kind: int) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        sa.select(
            document_sources.c.gateway_id,
            document_sources.c.assignment_id,
            document_sources.c.version,
        ).where(document_sources.c.kind == kind)
    )
    return {r.gateway_id: (r.assignment_id, r.version) for r in rows}


def pinned(documents: dict[str, _Current], sources: dict[str, tuple[int, int]]) -> set[str]:
    """Gateways whose document was put on the gateway itself: a desired document that no
    group wrote at its current version."""
    return {g for g, doc in documents.items() if g not in sources or sources[g][1] != doc.version}


def reconcile(
    conn: sa.Connection, kind: int, *, now: datetime, only: Iterable[str] | None = None
) -> list[Written]:
    """Bring every gateway's desired document of ``kind`` (or only ``only``'s) to its
    winning group document; returns what was written."""
    groups = {g.assignment_id: g for g in group_documents_of(conn, kind)}
    if not groups:
        return []
    city = sites(conn)
    if only is not None:
        wanted = set(only)
        city = [s for s in city if s.gateway_id in wanted]
    documents = _documents(conn, kind)
    sources = _sources(conn, kind)
    winners = resolve(city, [g.assignment for g in groups.values()], pinned(documents, sources))
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    source_rows: list[dict[str, Any]] = []
    written: list[Written] = []
    for gateway_id, assignment in winners.items():
        group = groups[assignment.assignment_id]
        current = documents.get(gateway_id)
        source = sources.get(gateway_id)
        if current is not None and current.digest == group.digest:
            if source != (group.assignment_id, current.version):
                source_rows.append(
                    {
                        "gateway_id": gateway_id,
                        "kind": kind,
                        "assignment_id": group.assignment_id,
                        "version": current.version,
                    }
                )
            continue
        version = (current.version if current else 0) + 1
        values = {
            "version": version,
            "digest": group.digest,
            "payload": group.payload,
            "issued_at": now,
            "issued_by": group.issued_by,
        }
        if current is None:
            inserts.append({"gateway_id": gateway_id, "kind": kind, **values})
        else:
            updates.append({"b_gateway": gateway_id, "b_version": current.version, **values})
        source_rows.append(
            {
                "gateway_id": gateway_id,
                "kind": kind,
                "assignment_id": group.assignment_id,
                "version": version,
            }
        )
        written.append(
            Written(gateway_id, kind, version, group.digest, group.payload, now, group.issued_by)
        )
    if inserts:
        conn.execute(desired_documents.insert(), inserts)
    if updates:
        # Compare-and-set on each version: a document put on one gateway meanwhile (another
        # replica) makes the whole change fail and be retried, never overwritten.
        done = conn.execute(
            desired_documents.update()
            .where(desired_documents.c.gateway_id == sa.bindparam("b_gateway"))
            .where(desired_documents.c.kind == kind)
            .where(desired_documents.c.version == sa.bindparam("b_version")),
            updates,
        )
        if done.rowcount not in (-1, len(updates)):
            raise GroupConflict("expected_version", "documents changed concurrently, retry")
    _write_sources(conn, kind, source_rows)
    return written


def _write_sources(conn: sa.Connection, kind: int, rows: Sequence[dict[str, Any]]) -> None:
    ids = [r["gateway_id"] for r in rows]
    for i in range(0, len(ids), 500):
        conn.execute(
            document_sources.delete()
            .where(document_sources.c.kind == kind)
            .where(document_sources.c.gateway_id.in_(ids[i : i + 500]))
        )
    if rows:
        conn.execute(document_sources.insert(), list(rows))


def release_pin(conn: sa.Connection, gateway_id: str, kind: int) -> None:
    """Let group documents reach a gateway whose document was put on it directly."""
    current = _documents(conn, kind).get(gateway_id)
    if current is not None:
        _write_sources(
            conn,
            kind,
            [
                {
                    "gateway_id": gateway_id,
                    "kind": kind,
                    "assignment_id": RELEASED,
                    "version": current.version,
                }
            ],
        )


def source_of(conn: sa.Connection, gateway_id: str, kind: int) -> tuple[int, int] | None:
    """``(assignment_id, version)`` the gateway's document was written from, if a group."""
    row = conn.execute(
        sa.select(document_sources.c.assignment_id, document_sources.c.version)
        .where(document_sources.c.gateway_id == gateway_id)
        .where(document_sources.c.kind == kind)
    ).first()
    return (row.assignment_id, row.version) if row else None


# -- refusals and convergence ----------------------------------------------------------------


def record_refusal(
    conn: sa.Connection, gateway_id: str, kind: int, version: int, error: str, *, now: datetime
) -> None:
    conn.execute(
        document_refusals.delete()
        .where(document_refusals.c.gateway_id == gateway_id)
        .where(document_refusals.c.kind == kind)
    )
    conn.execute(
        document_refusals.insert().values(
            gateway_id=gateway_id, kind=kind, version=version, error=error[:1024], refused_at=now
        )
    )


@dataclass(frozen=True)
class Standing:
    """One gateway's position on one document kind."""

    gateway_id: str
    commune: str
    last_seen: datetime | None
    desired_version: int
    held_version: int  # 0: holds none, or not as issued
    refused_version: int
    refusal: str
    refused_at: datetime | None
    assignment_id: int | None  # None: put on the gateway itself (or no document)


def winners(conn: sa.Connection, kind: int) -> dict[int, int]:
    """Assignment id -> how many gateways' desired document of ``kind`` it wrote (at their
    current version): the assignment ids of :func:`standings`, counted by the store in one
    query."""
    s, d = document_sources.c, desired_documents.c
    rows = conn.execute(
        sa.select(s.assignment_id, sa.func.count())
        .select_from(
            document_sources.join(
                desired_documents, sa.and_(d.gateway_id == s.gateway_id, d.kind == s.kind)
            )
        )
        .where(s.kind == kind, s.version == d.version)
        .group_by(s.assignment_id)
    )
    return {int(r[0]): int(r[1]) for r in rows}


def standings(conn: sa.Connection, kind: int) -> list[Standing]:
    """Every gateway's desired, held and refused version of ``kind``: four queries."""
    desired = _documents(conn, kind)
    sources = _sources(conn, kind)
    held = {
        r.gateway_id: (r.version, bytes(r.digest))
        for r in conn.execute(
            sa.select(
                held_documents.c.gateway_id, held_documents.c.version, held_documents.c.digest
            ).where(held_documents.c.kind == kind)
        )
    }
    refusals = {
        r.gateway_id: r
        for r in conn.execute(sa.select(document_refusals).where(document_refusals.c.kind == kind))
    }
    result = []
    for r in conn.execute(
        sa.select(gateways.c.gateway_id, gateways.c.commune, gateways.c.last_seen).order_by(
            gateways.c.gateway_id
        )
    ):
        doc = desired.get(r.gateway_id)
        h = held.get(r.gateway_id)
        refusal = refusals.get(r.gateway_id)
        source = sources.get(r.gateway_id)
        result.append(
            Standing(
                gateway_id=r.gateway_id,
                commune=r.commune,
                last_seen=r.last_seen,
                desired_version=doc.version if doc else 0,
                held_version=h[0] if h and doc and h == (doc.version, doc.digest) else 0,
                refused_version=refusal.version if refusal else 0,
                refusal=refusal.error if refusal else "",
                refused_at=refusal.refused_at if refusal else None,
                assignment_id=source[0] if source and doc and source[1] == doc.version else None,
            )
        )
    return result


# -- the fleet, a page at a time -------------------------------------------------------------


@dataclass(frozen=True)
class FleetRow:
    gateway_id: str
    commune: str
    tags: tuple[str, ...]
    firmware_version: str
    last_seen: datetime | None
    enrolled: bool
    documents: int
    documents_held: int


def fleet_page(
    conn: sa.Connection,
    *,
    after: str,
    limit: int,
    commune: str = "",
    communes: Sequence[str] | None = None,
) -> list[FleetRow]:
    """A page of gateways after ``after`` (by id), with how many of their documents they
    hold as issued: two queries per page."""
    query = sa.select(gateways).order_by(gateways.c.gateway_id).limit(limit)
    if after:
        query = query.where(gateways.c.gateway_id > after)
    if commune:
        query = query.where(gateways.c.commune == commune)
    if communes is not None:
        query = query.where(gateways.c.commune.in_(list(communes)))
    rows = list(conn.execute(query))
    ids = [r.gateway_id for r in rows]
    counts: dict[str, list[int]] = {i: [0, 0] for i in ids}
    if ids:
        d, h = desired_documents.c, held_documents.c
        for r in conn.execute(
            sa.select(
                d.gateway_id, h.version, h.digest, d.version.label("dv"), d.digest.label("dd")
            )
            .select_from(
                desired_documents.outerjoin(
                    held_documents, sa.and_(h.gateway_id == d.gateway_id, h.kind == d.kind)
                )
            )
            .where(d.gateway_id.in_(ids))
        ):
            counts[r.gateway_id][0] += 1
            if r.version == r.dv and r.digest is not None and bytes(r.digest) == bytes(r.dd):
                counts[r.gateway_id][1] += 1
    return [
        FleetRow(
            gateway_id=r.gateway_id,
            commune=r.commune,
            tags=tuple(r.tags or ()),
            firmware_version=r.firmware_version,
            last_seen=r.last_seen,
            enrolled=r.enrolled_at is not None,
            documents=counts[r.gateway_id][0],
            documents_held=counts[r.gateway_id][1],
        )
        for r in rows
    ]


# -- commands to many gateways ---------------------------------------------------------------


def add_commands(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Queue one command per gateway in one statement (``command_id``, ``gateway_id``,
    ``payload``, ``expires_at``, ``status``, ``created_at``, ``created_by``)."""
    if rows:
        conn.execute(commands.insert(), [{**r, "updated_at": r["created_at"]} for r in rows])


def batch_statuses(conn: sa.Connection, batch_id: str) -> list[tuple[str, int, str]]:
    """``(gateway_id, status, detail)`` of each command of a batch."""
    rows = conn.execute(
        sa.select(commands.c.gateway_id, commands.c.status, commands.c.detail)
        .where(commands.c.command_id.like(f"{batch_id}-%"))
        .order_by(commands.c.gateway_id)
    )
    return [(r.gateway_id, r.status, r.detail) for r in rows]
