"""SQL of crisis playbooks (orchestrator.playbooks): versions and runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store.schema import playbook_runs, playbooks


@dataclass(frozen=True)
class StoredPlaybook:
    name: str
    version: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str
    version: int
    status: str
    requested_by: str
    confirmed_by: str
    requested_at: datetime
    started_at: datetime | None
    ends_at: datetime | None
    ended_at: datetime | None
    ended_by: str
    steps: list[dict[str, Any]]


def put(conn: sa.Connection, name: str, body: dict[str, Any], by: str, now: datetime) -> int:
    """Store a new version of playbook ``name``; its number."""
    c = playbooks.c
    latest = conn.execute(sa.select(sa.func.max(c.version)).where(c.name == name)).scalar()
    version = int(latest or 0) + 1
    conn.execute(
        playbooks.insert().values(
            name=name, version=version, body=body, created_at=now, created_by=by
        )
    )
    return version


def get(conn: sa.Connection, name: str, version: int = 0) -> StoredPlaybook | None:
    c = playbooks.c
    stmt = sa.select(playbooks).where(c.name == name)
    stmt = stmt.where(c.version == version) if version else stmt.order_by(c.version.desc())
    row = conn.execute(stmt.limit(1)).first()
    return None if row is None else StoredPlaybook(row.name, row.version, row.body)


def latest_all(conn: sa.Connection) -> list[StoredPlaybook]:
    c = playbooks.c
    newest = sa.select(c.name, sa.func.max(c.version).label("version")).group_by(c.name).subquery()
    stmt = sa.select(playbooks).join(
        newest, sa.and_(c.name == newest.c.name, c.version == newest.c.version)
    )
    return [StoredPlaybook(r.name, r.version, r.body) for r in conn.execute(stmt.order_by(c.name))]


def add_run(conn: sa.Connection, run: Run) -> None:
    conn.execute(playbook_runs.insert().values(**run.__dict__))


def save_run(conn: sa.Connection, run: Run) -> None:
    values = dict(run.__dict__)
    run_id = values.pop("run_id")
    conn.execute(playbook_runs.update().where(playbook_runs.c.run_id == run_id).values(**values))


def get_run(conn: sa.Connection, run_id: str) -> Run | None:
    row = conn.execute(sa.select(playbook_runs).where(playbook_runs.c.run_id == run_id)).first()
    return None if row is None else Run(**dict(row._mapping))


def list_runs(conn: sa.Connection, ended_limit: int) -> list[Run]:
    """Runs not ended (newest first), then the ``ended_limit`` latest ended ones."""
    c = playbook_runs.c
    open_rows = conn.execute(
        sa.select(playbook_runs).where(c.status != "ended").order_by(c.requested_at.desc())
    ).all()
    ended_rows = conn.execute(
        sa.select(playbook_runs)
        .where(c.status == "ended")
        .order_by(c.requested_at.desc())
        .limit(ended_limit)
    ).all()
    return [Run(**dict(row._mapping)) for row in (*open_rows, *ended_rows)]
