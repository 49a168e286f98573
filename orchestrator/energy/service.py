"""The energy service: metering folded into lamp-days at ingest, and reports.

:meth:`EnergyService.on_events` runs inside the transaction that stores a gateway's events
(the ingest hook): the batch's ``energy_interval`` records are folded per lamp and local
day of the gateway's site and added to the stored totals, so the report never re-reads
millions of metering events. A replayed batch reaches no hook: nothing counted twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from domain import energy as core
from domain.energy import EnergyInputError, Interval, SunWindows
from domain.schedule.astronomy import sun_day
from domain.schedule.localtime import day_start
from domain.schedule.model import Site
from foundation.errors import FieldError
from orchestrator.store import energy as sql
from orchestrator.store.database import NewEvent, NotFound
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2

log = logging.getLogger("ondijon.orchestrator.energy")

Connection = Any
MAX_DAYS = 366
GROUPINGS = sql.GROUPINGS
Flagged = tuple[list[str], list[str]]


class EnergyError(FieldError):
    """A report request is refused (the field named)."""


@functools.lru_cache(maxsize=65_536)
def sun_windows(latitude: float, longitude: float, time_zone: str, day: date) -> SunWindows:
    site = Site(latitude, longitude, time_zone)
    sun = sun_day(site, day)
    start, end = day_start(day, site.zone), day_start(day + timedelta(days=1), site.zone)
    return core.windows_from_sun(start, end, sun.sunrise, sun.sunset)


class EnergyService:
    def __init__(self, runner: StoreRunner) -> None:
        self.runner = runner

    def on_events(
        self, conn: Connection, gateway_id: str, events: Sequence[NewEvent], now: datetime
    ) -> None:
        metering = [e for e in events if e.type == "energy_interval"]
        if not metering:
            return
        try:
            g = self.runner.store.get_gateway(conn, gateway_id)
        except NotFound:
            return
        intervals = []
        for e in metering:
            event = link_pb2.Event.FromString(e.payload)
            try:
                intervals.append(Interval.from_attributes(e.device_id, event.attributes))
            except EnergyInputError as exc:
                log.warning(
                    "gateway %s: metering record %d refused: %s", gateway_id, e.sequence, exc
                )
        days = core.fold(
            intervals,
            ZoneInfo(g.time_zone),
            functools.partial(sun_windows, g.latitude, g.longitude, g.time_zone),
        )
        sql.add_days(conn, gateway_id, g.commune, days)

    async def report(
        self, request: control_pb2.EnergyReportRequest, communes: Sequence[str] | None
    ) -> control_pb2.EnergyReportResponse:
        since, until = _day("since", request.since), _day("until", request.until or request.since)
        if until < since:
            raise EnergyError("until", "before since")
        if (until - since).days >= MAX_DAYS:
            raise EnergyError("until", f"at most {MAX_DAYS} days after since")
        by = request.by or "commune"
        if by not in GROUPINGS:
            raise EnergyError("by", f"one of {', '.join(GROUPINGS)}")
        for name in ("commune", "gateway_id"):
            if len(getattr(request, name)) > 128:
                raise EnergyError(name, "at most 128 characters")
        # Summed by the database, in one read transaction (the same figures as
        # core.summarise over the lamp-days: tests/orchestrator/test_energy_store.py).
        scope = sql.Scope(since, until, communes, request.commune, request.gateway_id)

        def read(conn: Connection) -> tuple[dict[str, core.Summary], core.Summary, Flagged]:
            everything = sql.summaries(conn, scope, by=None)
            return (
                sql.summaries(conn, scope, by=by),
                everything.get("", core.summarise([])),
                sql.flagged(conn, scope),
            )

        groups, total, (burners, dark) = await self.runner.read(read)
        keys = sorted(groups)
        limit = min(request.limit or 1000, 10_000)
        page = keys[request.offset : request.offset + limit]
        return control_pb2.EnergyReportResponse(
            rows=[_row(k, groups[k]) for k in page],
            total=_row("city" if not request.commune else request.commune, total),
            day_burner_lamps=burners[:1000],
            dark_lamps=dark[:1000],
        )


def _day(name: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise EnergyError(name, "a local date, YYYY-MM-DD") from None


def _row(key: str, s: core.Summary) -> control_pb2.EnergyRow:
    return control_pb2.EnergyRow(
        key=key,
        lamps=s.lamps,
        kwh=s.kwh,
        burning_hours=s.burning_hours,
        baseline_kwh=s.baseline_kwh,
        saving=s.saving,
        profile=list(s.profile),
        day_burners=s.day_burners,
        dark_at_night=s.dark_at_night,
    )
