"""SQL of the alarms (orchestrator.alarms): one open row per (gateway, device, type).

Functions take the caller's connection: alarms raised from events are written in the very
transaction that stores the events, so an event is never stored without its alarm, nor
counted twice when a batch is replayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from domain.alarms import Alarm, Severity
from orchestrator.store.schema import alarms

_ALARM_FIELDS = [f.name for f in fields(Alarm)]
MAX_PAGE = 1000


@dataclass(frozen=True)
class StoredAlarm:
    id: int
    commune: str
    alarm: Alarm
    updated_at: datetime
    # Open alarms grouped under this one (flood control), when it is a root cause.
    grouped: int = 0


@dataclass(frozen=True)
class AlarmQuery:
    """Filters of a page of alarms; empty fields do not filter."""

    communes: Sequence[str] | None = None  # the caller's scope; None: all
    commune: str = ""
    type: str = ""
    gateway_id: str = ""
    min_severity: int = 0
    # "open" (default), "closed" or "all"
    status: str = "open"
    # Alarms grouped under a root cause are left out unless asked (flood control).
    include_grouped: bool = False
    root_id: int = 0
    after_id: int = 0
    limit: int = 100


def _alarm(row: Any) -> StoredAlarm:
    m = row._mapping
    values = {name: m[name] for name in _ALARM_FIELDS}
    values["severity"] = Severity(values["severity"])
    return StoredAlarm(
        id=int(m["id"]),
        commune=m["commune"],
        alarm=Alarm(**values),
        updated_at=m["updated_at"],
        grouped=int(m["grouped"]) if "grouped" in m else 0,
    )


def _values(alarm: Alarm) -> dict[str, Any]:
    values = {name: getattr(alarm, name) for name in _ALARM_FIELDS}
    values["severity"] = int(alarm.severity)
    return values


def open_alarms(
    conn: sa.Connection, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], StoredAlarm]:
    """The open alarm of each key that has one."""
    keys = list(set(keys))
    if not keys:
        return {}
    c = alarms.c
    found: dict[tuple[str, str, str], StoredAlarm] = {}
    gateways = sorted({k[0] for k in keys})
    stmt = sa.select(alarms).where(c.closed_at.is_(None), c.gateway_id.in_(gateways))
    wanted = set(keys)
    for row in conn.execute(stmt):
        stored = _alarm(row)
        if stored.alarm.key in wanted:
            found[stored.alarm.key] = stored
    return found


def save(
    conn: sa.Connection,
    alarm_id: int | None,
    alarm: Alarm,
    *,
    commune: str,
    now: datetime,
) -> int:
    """Insert (``alarm_id`` None) or update one alarm; its id."""
    values = _values(alarm) | {"commune": commune, "updated_at": now}
    if alarm_id is None:
        result = conn.execute(alarms.insert().values(**values).returning(alarms.c.id))
        return int(result.scalar_one())
    conn.execute(alarms.update().where(alarms.c.id == alarm_id).values(**values))
    return alarm_id


def insert_many(
    conn: sa.Connection, new: Sequence[Alarm], *, commune: str, now: datetime
) -> list[int]:
    """Insert alarms with one statement; their ids, in the order given."""
    if not new:
        return []
    rows = [_values(a) | {"commune": commune, "updated_at": now} for a in new]
    stmt = alarms.insert().returning(alarms.c.id, sort_by_parameter_order=True)
    return [int(i) for i in conn.execute(stmt, rows).scalars()]


_UPDATE_BY_ID = alarms.update().where(alarms.c.id == sa.bindparam("alarm_id"))


def update_many(
    conn: sa.Connection, changed: Mapping[int, Alarm], *, commune: str, now: datetime
) -> None:
    """Write alarms by id with one statement (``executemany``)."""
    if changed:
        rows = [
            _values(a) | {"commune": commune, "updated_at": now, "alarm_id": i}
            for i, a in changed.items()
        ]
        conn.execute(_UPDATE_BY_ID, rows)


def get(conn: sa.Connection, alarm_id: int) -> StoredAlarm | None:
    row = conn.execute(sa.select(alarms).where(alarms.c.id == alarm_id)).first()
    return None if row is None else _alarm(row)


def open_root(conn: sa.Connection, gateway_id: str, root_types: Iterable[str]) -> int | None:
    """The id of an open root-cause alarm of ``gateway_id`` (mains lost, silent), if any."""
    c = alarms.c
    row = conn.execute(
        sa.select(c.id)
        .where(c.gateway_id == gateway_id, c.closed_at.is_(None), c.type.in_(list(root_types)))
        .order_by(c.id)
        .limit(1)
    ).first()
    return None if row is None else int(row.id)


def group(
    conn: sa.Connection, gateway_id: str, root_id: int, types: Iterable[str], now: datetime
) -> int:
    """Put the open ungrouped alarms of ``types`` of a gateway under ``root_id``; how many."""
    c = alarms.c
    stmt = (
        alarms.update()
        .where(
            c.gateway_id == gateway_id,
            c.closed_at.is_(None),
            c.root_id.is_(None),
            c.type.in_(list(types)),
        )
        .values(root_id=root_id, updated_at=now)
    )
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)


def ungroup(conn: sa.Connection, root_id: int, now: datetime) -> None:
    """The root cause closed: what it grouped and is back to normal closes with it (the
    operator dealt with the cause); what is still active is listed on its own again."""
    c = alarms.c
    conn.execute(
        alarms.update()
        .where(c.root_id == root_id, c.closed_at.is_(None), c.active.is_(False))
        .values(closed_at=now, closed_by="with its root cause", updated_at=now)
    )
    conn.execute(
        alarms.update()
        .where(c.root_id == root_id, c.closed_at.is_(None))
        .values(root_id=None, updated_at=now)
    )


def select(conn: sa.Connection, query: AlarmQuery) -> list[StoredAlarm]:
    """One page of alarms, by id, with the number grouped under each."""
    c = alarms.c
    child = alarms.alias("child")
    grouped = (
        sa.select(sa.func.count())
        .where(child.c.root_id == c.id, child.c.closed_at.is_(None))
        .scalar_subquery()
        .label("grouped")
    )
    stmt = sa.select(alarms, grouped).where(c.id > query.after_id)
    if query.status == "open":
        stmt = stmt.where(c.closed_at.is_(None))
    elif query.status == "closed":
        stmt = stmt.where(c.closed_at.is_not(None))
    if query.communes is not None:
        stmt = stmt.where(c.commune.in_(list(query.communes)))
    if query.commune:
        stmt = stmt.where(c.commune == query.commune)
    if query.type:
        stmt = stmt.where(c.type == query.type)
    if query.gateway_id:
        stmt = stmt.where(c.gateway_id == query.gateway_id)
    if query.min_severity:
        stmt = stmt.where(c.severity >= query.min_severity)
    if query.root_id:
        stmt = stmt.where(c.root_id == query.root_id)
    elif not query.include_grouped:
        stmt = stmt.where(c.root_id.is_(None))
    stmt = stmt.order_by(c.id).limit(max(1, min(query.limit, MAX_PAGE)))
    return [_alarm(row) for row in conn.execute(stmt)]


def changed_since(
    conn: sa.Connection, since: datetime, communes: Sequence[str] | None, limit: int = 1000
) -> list[StoredAlarm]:
    """Alarms written at or after ``since`` (the watch feed), oldest change first."""
    c = alarms.c
    stmt = sa.select(alarms).where(c.updated_at >= since)
    if communes is not None:
        stmt = stmt.where(c.commune.in_(list(communes)))
    stmt = stmt.order_by(c.updated_at, c.id).limit(limit)
    return [_alarm(row) for row in conn.execute(stmt)]


def awaiting_reminder(conn: sa.Connection, raised_before: datetime) -> list[StoredAlarm]:
    """Open, active, unacknowledged alarms last raised or reminded before ``raised_before``
    (the core decides, shelving included)."""
    c = alarms.c
    stmt = sa.select(alarms).where(
        c.closed_at.is_(None),
        c.active.is_(True),
        c.acknowledged.is_(False),
        sa.func.coalesce(c.reminded_at, c.last_at) <= raised_before,
    )
    return [_alarm(row) for row in conn.execute(stmt.limit(MAX_PAGE))]


def open_counts(conn: sa.Connection) -> list[tuple[int, bool, bool, datetime | None, int]]:
    """How many open alarms (grouped ones included) share each (severity, active,
    acknowledged, shelved_until): what their view state and severity are counted from."""
    c = alarms.c
    keys = (c.severity, c.active, c.acknowledged, c.shelved_until)
    stmt = sa.select(*keys, sa.func.count()).where(c.closed_at.is_(None)).group_by(*keys)
    return [
        (int(severity), bool(active), bool(acknowledged), shelved_until, int(count))
        for severity, active, acknowledged, shelved_until, count in conn.execute(stmt)
    ]


def open_of_type(conn: sa.Connection, alarm_type: str) -> list[StoredAlarm]:
    c = alarms.c
    stmt = sa.select(alarms).where(c.closed_at.is_(None), c.type == alarm_type)
    return [_alarm(row) for row in conn.execute(stmt)]


def repair_times(
    conn: sa.Connection, communes: Sequence[str] | None, since: datetime
) -> list[tuple[str, str, float]]:
    """(commune, type, seconds from first occurrence to close) of alarms closed since."""
    c = alarms.c
    stmt = sa.select(c.commune, c.type, c.first_at, c.closed_at).where(c.closed_at >= since)
    if communes is not None:
        stmt = stmt.where(c.commune.in_(list(communes)))
    return [
        (r.commune, r.type, (r.closed_at - r.first_at).total_seconds()) for r in conn.execute(stmt)
    ]
