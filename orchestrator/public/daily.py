"""The daily export: every day at ``[public] export_at`` (local time), the open data is
written to ``[public] export_dir`` (``OUT/current``, atomically: :func:`publish`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from domain.opendata.catalogue import Publisher
from domain.schedule.localtime import wall_to_utc
from foundation.clock import Clock
from orchestrator.public.export import build, publish
from orchestrator.store.runner import StoreRunner

log = logging.getLogger("ondijon.orchestrator.opendata")


def next_run(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first instant after ``now`` whose local time is ``at`` (a time skipped by a DST
    change happens at the instant the clock jumps; a repeated one, the first time)."""
    day = now.astimezone(zone).date()
    for offset in range(3):
        when = wall_to_utc(day + timedelta(days=offset), at, zone)
        if when > now:
            return when
    raise AssertionError("unreachable: a local time occurs every day")


def parse_at(text: str) -> time:
    hour, _, minute = text.partition(":")
    return time(int(hour), int(minute))


class DailyExport:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        publisher: Publisher,
        out: Path,
        at: time,
        zone: str = "Europe/Paris",
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.publisher = publisher
        self.out = out
        self.at = at
        self.zone = ZoneInfo(zone)
        self.written: list[Path] = []

    async def once(self) -> Path:
        export = await build(self.runner, self.publisher, self.clock.now)
        path = await asyncio.to_thread(publish, self.out, export)
        self.written.append(path)
        log.info("open data exported to %s (%d files)", path, len(export.files))
        return path

    async def run(self) -> None:
        """Export at the set time every day, forever (owned by the server's task set)."""
        while True:
            when = next_run(self.clock.now(), self.at, self.zone)
            # The wall clock can step while we wait: wake at least hourly and look again.
            while self.clock.now() < when:
                await self.clock.sleep(
                    min(3600.0, max(0.0, (when - self.clock.now()).total_seconds()))
                )
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the daily open data export failed; the previous one stays")
