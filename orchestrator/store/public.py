"""SQL of the public side (orchestrator.public): citizens' reports, and the reads the open
data export needs beyond the other table groups (lamp faults over a period)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.records import Conflict
from orchestrator.store.schema import alarms, public_reports


@dataclass(frozen=True)
class StoredReport:
    reference: str
    kind: str
    detail: str
    latitude: float
    longitude: float
    commune: str
    asset_id: str
    gateway_id: str
    device_id: str
    distance_m: float
    alarm_id: int | None
    reported_at: datetime


@dataclass(frozen=True)
class ReportState:
    """A report with what became of its alarm."""

    report: StoredReport
    alarm_open: bool | None  # None: no alarm (deleted or never)
    acknowledged: bool
    assigned: bool
    closed_at: datetime | None


@dataclass(frozen=True)
class FaultRow:
    commune: str
    gateway_id: str
    device_id: str
    first_at: datetime
    closed_at: datetime | None


_REPORT_COLUMNS = [c.name for c in public_reports.c if c.name != "challenge_sha256"]


def add_report(conn: sa.Connection, report: StoredReport, challenge_sha256: str) -> None:
    """Insert a report; Conflict if its challenge was used already (on any replica)."""
    values = {name: getattr(report, name) for name in _REPORT_COLUMNS}
    try:
        with conn.begin_nested():
            conn.execute(
                public_reports.insert().values(**values, challenge_sha256=challenge_sha256)
            )
    except sa.exc.IntegrityError:
        raise Conflict("challenge", "already used") from None


def challenge_used(conn: sa.Connection, challenge_sha256: str) -> bool:
    c = public_reports.c
    stmt = sa.select(c.reference).where(c.challenge_sha256 == challenge_sha256)
    return conn.execute(stmt).first() is not None


def get_report(conn: sa.Connection, reference: str) -> ReportState | None:
    p, a = public_reports.c, alarms.c
    stmt = (
        sa.select(public_reports, a.closed_at, a.acknowledged, a.assigned_to, a.id.label("aid"))
        .select_from(public_reports.outerjoin(alarms, a.id == p.alarm_id))
        .where(p.reference == reference)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    m = row._mapping
    report = StoredReport(**{name: m[name] for name in _REPORT_COLUMNS})
    has_alarm = m["aid"] is not None
    return ReportState(
        report=report,
        alarm_open=(m["closed_at"] is None) if has_alarm else None,
        acknowledged=bool(m["acknowledged"]) if has_alarm else False,
        assigned=bool(m["assigned_to"]) if has_alarm else False,
        closed_at=m["closed_at"] if has_alarm else None,
    )


def delete_reports_before(conn: sa.Connection, cutoff: datetime) -> int:
    """Delete every report made at or before ``cutoff`` (the retention sweep); how many."""
    stmt = public_reports.delete().where(public_reports.c.reported_at <= cutoff)
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)


def count_reports(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(public_reports)).scalar_one())


def active_alarm(
    conn: sa.Connection, gateway_id: str, device_ids: Iterable[str], types: Iterable[str]
) -> int | None:
    """The id of an open, active alarm of one of ``types`` on one of the devices (the
    oldest), if any."""
    c = alarms.c
    stmt = (
        sa.select(c.id)
        .where(
            c.gateway_id == gateway_id,
            c.device_id.in_(list(device_ids)),
            c.type.in_(list(types)),
            c.closed_at.is_(None),
            c.active.is_(True),
        )
        .order_by(c.id)
        .limit(1)
    )
    row = conn.execute(stmt).first()
    return None if row is None else int(row.id)


def faults(conn: sa.Connection, types: Iterable[str], since: datetime) -> list[FaultRow]:
    """Alarms of ``types`` open at or after ``since`` (still open, or closed since)."""
    c = alarms.c
    stmt = sa.select(c.commune, c.gateway_id, c.device_id, c.first_at, c.closed_at).where(
        c.type.in_(list(types)), sa.or_(c.closed_at.is_(None), c.closed_at >= since)
    )
    return [
        FaultRow(r.commune, r.gateway_id, r.device_id, r.first_at, r.closed_at)
        for r in conn.execute(stmt)
    ]
