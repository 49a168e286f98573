"""Tonight's lamp switch times at a site, as the agent will apply them.

:func:`tonight` walks :func:`~domain.schedule.evaluator.evaluate` (the agent's own engine)
from local noon to the next local noon, from one ``next_change`` to the next, and keeps
the instants where the lamps' level changes. Overrides and the light sensor are left out:
this is what the schedule itself orders (the console's preview before a put).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from domain.schedule.errors import EvaluationError
from domain.schedule.evaluator import evaluate
from domain.schedule.localtime import local_date, wall_to_utc
from domain.schedule.model import DeviceKind, Schedule, Site

# A program changes a few times a night; more than this is a schedule gone wrong.
MAX_SWITCHES = 200


@dataclass(frozen=True)
class Switch:
    """From ``at`` (UTC) the lamps are at ``level`` (0 off), decided by ``source``."""

    at: datetime
    level: int
    source: str


@dataclass(frozen=True)
class Night:
    """The lamps from ``start`` (local noon) to ``end`` (next local noon): the level at
    ``start``, then each change."""

    start: datetime
    end: datetime
    switches: tuple[Switch, ...]


def tonight(schedule: Schedule | None, site: Site, now: datetime) -> Night:
    """The lamps from the latest local noon at or before ``now`` to the next local noon.

    Raises:
        EvaluationError: ``now`` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise EvaluationError("now", "must be timezone-aware")
    day = local_date(now, site.zone)
    start = wall_to_utc(day, time(12), site.zone)
    if start > now:
        day -= timedelta(days=1)
        start = wall_to_utc(day, time(12), site.zone)
    end = wall_to_utc(day + timedelta(days=1), time(12), site.zone)
    switches: list[Switch] = []
    at = start
    while at < end and len(switches) < MAX_SWITCHES:
        decision = evaluate(schedule, site, at, kind=DeviceKind.LAMP, device_id="")
        level = decision.lamp_level or 0
        if not switches or switches[-1].level != level:
            switches.append(Switch(at, level, decision.source))
        at = decision.next_change
    return Night(start, end, tuple(switches))
