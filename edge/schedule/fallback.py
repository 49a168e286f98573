"""What lamps do when no program says anything: on from sunset to sunrise, never dark at night.

Used with no schedule, on a date no calendar rule covers, and while no switch point of the
running programs has set a lamp level yet. Each local date contributes its own switches:
every sunset of the date turns the lamps on, every sunrise turns them off (a date near a
polar circle can have two sunsets); a polar-night date turns them on at its first
instant, a polar-day date turns them off. The lamps are in the state of the latest
switch at or before now, looking back up to :data:`LOOKBACK_DAYS` dates; if there is none
(a site where the Sun grazes the horizon for a week) they are on: dark streets are the
failure this module exists to prevent.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache

from edge.schedule.astronomy import Daylight, sun_day
from edge.schedule.localtime import day_start, local_date
from edge.schedule.model import Site

LOOKBACK_DAYS = 7


def night_switches(site: Site, day: date) -> tuple[tuple[datetime, bool], ...]:
    """The default lamp switches of local date ``day``: (UTC instant, lamps on), in order."""
    return _night_switches(site, day)


@lru_cache(maxsize=4096)
def _night_switches(site: Site, day: date) -> tuple[tuple[datetime, bool], ...]:
    sun = sun_day(site, day)
    if sun.daylight is Daylight.POLAR_NIGHT:
        return ((day_start(day, site.zone), True),)
    if sun.daylight is Daylight.POLAR_DAY:
        return ((day_start(day, site.zone), False),)
    return tuple((crossing.at, not crossing.rising) for crossing in sun.horizon)


def night_lamps_on(site: Site, now: datetime) -> bool:
    """Whether lamps are on by default at ``now`` (aware) at ``site``."""
    today = local_date(now, site.zone)
    for back in range(LOOKBACK_DAYS + 1):
        for at, lamps_on in reversed(night_switches(site, today - timedelta(days=back))):
            if at <= now:
                return lamps_on
    return True
