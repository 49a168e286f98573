"""A day's program resolved to concrete UTC instants at a site.

For each local date the calendar picks a program; its switch points become instants:

- a fixed ``local_time`` goes through :func:`domain.schedule.localtime.wall_to_utc` (a time
  in the spring gap happens right after it; one in the repeated autumn hour happens once,
  at its first occurrence);
- a ``sun_event`` happens at every crossing of that kind plus ``offset_minutes`` that
  lands on that local date: the Sun's crossings are a sequence in time
  (:mod:`domain.schedule.astronomy`), so a date near a polar circle with two sunsets (one
  just after midnight, one just before the next) gets the point twice, and a date whose
  sunset + 30 min falls just after midnight gets the previous evening's. A date the event
  never reaches (polar day or night) does not get the point. A day's points never reach
  into another day's program: each lands on the date it happens on.

Points are ordered by instant; points at the same instant keep the program's order, so
the one written later wins. :func:`day_plan` is cached per (schedule, site, date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from domain.schedule.astronomy import sun_day
from domain.schedule.calendar import program_for
from domain.schedule.localtime import day_start, wall_to_utc
from domain.schedule.model import Program, Schedule, Site, SwitchPoint


@dataclass(frozen=True)
class TimedPoint:
    """A switch point placed at its instant on one day."""

    at: datetime
    point: SwitchPoint
    program_id: str


@dataclass(frozen=True)
class DayPlan:
    """What the calendar and program say for one local date."""

    day: date
    # First instant of the date and of the next one (UTC).
    start: datetime
    end: datetime
    program: Program | None
    points: tuple[TimedPoint, ...]


def resolve_program(program: Program, site: Site, day: date) -> tuple[TimedPoint, ...]:
    """The program's switch points on local date ``day`` at ``site``, ordered by instant.

    Args:
        program: the program to place.
        site: coordinates (for sun events) and zone (for wall times).
        day: the local date.

    Returns:
        Points with their UTC instants; points that do not happen that date are left out.
    """
    start = day_start(day, site.zone)
    end = day_start(day + timedelta(days=1), site.zone)
    placed: list[TimedPoint] = []
    for point in program.points:
        for at in _instants(point, site, day):
            if start <= at < end:
                placed.append(TimedPoint(at=at, point=point, program_id=program.id))
    # sorted() is stable: equal instants keep the program's order.
    return tuple(sorted(placed, key=lambda timed: timed.at))


def _instants(point: SwitchPoint, site: Site, day: date) -> list[datetime]:
    if point.local_time is not None:
        return [wall_to_utc(day, point.local_time, site.zone)]
    if point.sun_event is None:
        return []
    offset = timedelta(minutes=point.offset_minutes)
    # An offset of up to 12 h can bring the crossings of the neighbouring dates in.
    return [
        event + offset
        for near in (day - timedelta(days=1), day, day + timedelta(days=1))
        for event in sun_day(site, near).events(point.sun_event)
    ]


def day_plan(schedule: Schedule, site: Site, day: date) -> DayPlan:
    """The program chosen for local date ``day`` and its resolved points (cached)."""
    return _day_plan(schedule, site, day)


@lru_cache(maxsize=4096)
def _day_plan(schedule: Schedule, site: Site, day: date) -> DayPlan:
    program = program_for(schedule, day)
    points = () if program is None else resolve_program(program, site, day)
    return DayPlan(
        day=day,
        start=day_start(day, site.zone),
        end=day_start(day + timedelta(days=1), site.zone),
        program=program,
        points=points,
    )
