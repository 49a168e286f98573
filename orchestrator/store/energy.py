"""SQL of energy per lamp per local day (orchestrator.energy), written at ingest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from domain.energy import (
    DARK_LIT_FRACTION,
    DARK_MIN_NIGHT_S,
    DAY_BURNER_WH,
    LampDay,
    Summary,
)
from orchestrator.store.schema import energy_days

HOURS = [f"h{h:02d}" for h in range(24)]
GROUPINGS = ("commune", "gateway", "lamp", "day")


@dataclass(frozen=True)
class Scope:
    """Lamp-days from ``since`` to ``until`` (inclusive), within ``communes`` (``None``: all)
    and, when given, of one commune or one gateway."""

    since: date
    until: date
    communes: Sequence[str] | None
    commune: str = ""
    gateway_id: str = ""

    def where(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        c = energy_days.c
        stmt = stmt.where(c.day >= self.since, c.day <= self.until)
        if self.communes is not None:
            stmt = stmt.where(c.commune.in_(list(self.communes)))
        if self.commune:
            stmt = stmt.where(c.commune == self.commune)
        if self.gateway_id:
            stmt = stmt.where(c.gateway_id == self.gateway_id)
        return stmt


@dataclass(frozen=True)
class StoredDay:
    gateway_id: str
    device_id: str
    day: date
    commune: str
    totals: LampDay


def _totals(row: sa.Row[tuple[object, ...]]) -> LampDay:
    m = row._mapping
    return LampDay(
        wh=m["wh"],
        on_seconds=m["on_seconds"],
        covered_seconds=m["covered_seconds"],
        day_wh=m["day_wh"],
        night_seconds=m["night_seconds"],
        night_on_seconds=m["night_on_seconds"],
        peak_w=m["peak_w"],
        profile=[float(x) for x in m["profile"]],
    )


def add_days(
    conn: sa.Connection,
    gateway_id: str,
    commune: str,
    days: Mapping[tuple[str, date], LampDay],
) -> None:
    """Fold ``days`` (per (lamp, local date)) of one gateway into what is stored."""
    if not days:
        return
    c = energy_days.c
    held = {
        (r.device_id, r.day): _totals(r)
        for r in conn.execute(
            sa.select(energy_days).where(
                c.gateway_id == gateway_id,
                c.day.in_(sorted({d for _, d in days})),
                c.device_id.in_(sorted({device for device, _ in days})),
            )
        )
    }
    inserts = []
    for (device, day), part in days.items():
        total = held.get((device, day))
        row = {"gateway_id": gateway_id, "device_id": device, "day": day, "commune": commune}
        if total is None:
            inserts.append(row | _values(part))
            continue
        total.add(part)
        conn.execute(
            energy_days.update()
            .where(c.gateway_id == gateway_id, c.device_id == device, c.day == day)
            .values(**_values(total))
        )
    if inserts:
        conn.execute(energy_days.insert(), inserts)


def _values(d: LampDay) -> dict[str, object]:
    profile = [round(x, 3) for x in d.profile]
    return {
        "wh": d.wh,
        "on_seconds": d.on_seconds,
        "covered_seconds": d.covered_seconds,
        "day_wh": d.day_wh,
        "night_seconds": d.night_seconds,
        "night_on_seconds": d.night_on_seconds,
        "peak_w": d.peak_w,
        "profile": profile,
    } | {HOURS[h]: profile[h] for h in range(24)}


def select_days(
    conn: sa.Connection,
    since: date,
    until: date,
    *,
    communes: Sequence[str] | None,
    commune: str = "",
    gateway_id: str = "",
) -> list[StoredDay]:
    """Lamp-days from ``since`` to ``until`` (inclusive) within the scope."""
    stmt = Scope(since, until, communes, commune, gateway_id).where(sa.select(energy_days))
    return [
        StoredDay(r.gateway_id, r.device_id, r.day, r.commune, _totals(r))
        for r in conn.execute(stmt)
    ]


def _one(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((condition, 1), else_=0)


def summaries(conn: sa.Connection, scope: Scope, *, by: str | None) -> dict[str, Summary]:
    """:func:`domain.energy.summarise` of the lamp-days in the scope, per ``by`` (one of
    :data:`GROUPINGS`; ``None``: one summary, key ``""``), summed by the database: the
    rows never come to Python. A lamp's full power is its highest ``peak_w`` within its
    group, as in the reference (no rated power)."""
    c = energy_days.c
    key: sa.ColumnElement[Any] = {
        None: sa.literal(""),
        "commune": c.commune,
        "gateway": c.gateway_id,
        "lamp": c.gateway_id + "/" + c.device_id,
        "day": c.day,
    }[by]
    dark = sa.and_(
        c.night_seconds >= DARK_MIN_NIGHT_S,
        c.night_on_seconds < DARK_LIT_FRACTION * c.night_seconds,
    )
    # Per lamp of each group first: its full power is constant there. When each lamp has
    # one row per group (one day, or grouped by day) the rows are that already: no
    # grouping per lamp, which costs SQLite a sort of every row (5x the time at city scale).
    grouped = not (scope.since == scope.until or by == "day")

    def agg(x: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.sum(x) if grouped else x

    def peak(x: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.max(x) if grouped else x

    per_lamp = scope.where(
        sa.select(
            key.label("k"),
            agg(c.wh).label("wh"),
            agg(c.on_seconds).label("on_s"),
            agg(c.night_seconds).label("night"),
            peak(c.peak_w).label("full"),
            agg(_one(c.day_wh >= DAY_BURNER_WH)).label("burners"),
            agg(_one(dark)).label("dark"),
            *(agg(c[h]).label(h) for h in HOURS),
            *(agg(_one(c[h] > 0)).label(f"n{h}") for h in HOURS),
        )
    )
    if grouped:
        per_lamp = per_lamp.group_by(key, c.gateway_id, c.device_id)
    lamp = per_lamp.subquery()
    s = lamp.c
    stmt = sa.select(
        s.k,
        sa.func.count().label("lamps"),
        sa.func.sum(s.wh).label("wh"),
        sa.func.sum(s.on_s).label("on_s"),
        sa.func.sum(s.full * s.night).label("base"),
        sa.func.sum(s.burners).label("burners"),
        sa.func.sum(s.dark).label("dark"),
        *(sa.func.sum(s[h]).label(h) for h in HOURS),
        *(sa.func.sum(s.full * s[f"n{h}"]).label(f"f{h}") for h in HOURS),
    ).group_by(s.k)
    out = {}
    for r in conn.execute(stmt):
        m = r._mapping
        profile = tuple(
            round(100.0 * m[h] / m[f"f{h}"], 1) if m[f"f{h}"] > 0 else 0.0 for h in HOURS
        )
        k = m["k"]
        out[k.isoformat() if isinstance(k, date) else str(k)] = Summary(
            int(m["lamps"]),
            m["wh"] / 1000.0,
            m["on_s"] / 3600.0,
            m["base"] / 3600.0 / 1000.0,
            profile,
            int(m["burners"]),
            int(m["dark"]),
        )
    return out


def flagged(conn: sa.Connection, scope: Scope) -> tuple[list[str], list[str]]:
    """The day burners and the lamps dark at night in the scope, ``"gateway/lamp day"``,
    sorted."""
    c = energy_days.c
    dark = sa.and_(
        c.night_seconds >= DARK_MIN_NIGHT_S,
        c.night_on_seconds < DARK_LIT_FRACTION * c.night_seconds,
    )
    burners, darks = [], []
    stmt = scope.where(
        sa.select(
            c.gateway_id, c.device_id, c.day, (c.day_wh >= DAY_BURNER_WH).label("burner"),
            dark.label("dark"),
        ).where(sa.or_(c.day_wh >= DAY_BURNER_WH, dark))
    )  # fmt: skip
    for r in conn.execute(stmt):
        name = f"{r.gateway_id}/{r.device_id} {r.day.isoformat()}"
        if r.burner:
            burners.append(name)
        if r.dark:
            darks.append(name)
    return sorted(burners), sorted(darks)
