"""SQL of energy per lamp per local day (orchestrator.energy), written at ingest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from domain.energy import LampDay
from orchestrator.store.schema import energy_days


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
    return {
        "wh": d.wh,
        "on_seconds": d.on_seconds,
        "covered_seconds": d.covered_seconds,
        "day_wh": d.day_wh,
        "night_seconds": d.night_seconds,
        "night_on_seconds": d.night_on_seconds,
        "peak_w": d.peak_w,
        "profile": [round(x, 3) for x in d.profile],
    }


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
    c = energy_days.c
    stmt = sa.select(energy_days).where(c.day >= since, c.day <= until)
    if communes is not None:
        stmt = stmt.where(c.commune.in_(list(communes)))
    if commune:
        stmt = stmt.where(c.commune == commune)
    if gateway_id:
        stmt = stmt.where(c.gateway_id == gateway_id)
    return [
        StoredDay(r.gateway_id, r.device_id, r.day, r.commune, _totals(r))
        for r in conn.execute(stmt)
    ]
